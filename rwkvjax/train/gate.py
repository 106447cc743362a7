"""The update gate: every update is a transaction. The loop snapshots the trainables, optimizer moments and
replay buffer, makes the step, and this hook probes the result and commits or rolls it back.

Probe: bits per byte of the first `probe_tokens` of fixed canary texts and of a small recent held-out slice
of the stream (windows diverted from training), both read from the start state just updated. With a session
memory (`train.session_memory`), the canaries are also scored by the mixture of that model and a copy of the memory
as the step left it (the memory itself never learns them). Decisions, each with its reason:
- roll back when canary bpb is more than `canary_rel` above its value at the start of the run (so the run can
  never drift past that bound), or when the canary change is an outlier: robust z = (d - median) / (1.4826 MAD)
  over the last `window` accepted changes (at least `min_history` of them, MAD floored) reaches `z`; the memory's
  learning of the step is undone with it;
- undo only the memory's learning of the step (S0's update stands: it is judged by the model's canaries) when the
  canaries read by the mixture are more than `canary_rel` above the model's canary bpb at the start of the run;
- quarantine (the update is undone, and the window never enters replay nor the memory) when a window is both out of
  distribution for the frozen model and a heavy write: its frozen bpb is at least `quarantine_bpb` times the
  frozen model's bpb on the canaries, and the start-state gradient norm of the update at least
  `quarantine_grad` times that of the canary loss. Both references are fixed at the start of the run (a
  statistic of recent updates would adapt to a flood of poison) and the ratios are calibrated on real sessions
  (benchmarks/gate_calibration.py). Neither signal alone quarantines: base64, hashes, minified code and
  instruction-like text are normal in coding sessions.
Before training, `screen` skips windows that carry no new information or that would contaminate the probe:
a window whose n-grams (about 32 bytes each) are nearly all repeats, of each other or of the recent windows
(a flood of one line, a re-read file), or that holds a verbatim canary passage of about two n-grams or more
(canaries must never be trained on). And with `project`, the
update of the start state is projected so that it does not increase the canary loss to first order (A-GEM,
Chaudhry et al. 2019, arXiv:1812.00420, applied to the final update, after AdamW): learning continues
without spending the canary bound.

Roles: `SourceScreen` (the held-out slice and the screen, asked by the source before training), `CanaryProbe`
(the figures), `CanaryProjector` (the projection, which the learner applies to its update) and `UpdateGate`
(the hook that decides, and remembers the figures of the states it switches between).
"""

from __future__ import annotations

import collections
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.io.checkpoint import StatePart
from rwkvjax.merges.units import PLAIN
from rwkvjax.model.units import LN2
from rwkvjax.model.wkv import WkvImpl
from rwkvjax.train.data import Window, make_batch
from rwkvjax.train.loop import Hook, StepInfo, Veto
from rwkvjax.train.objective import loss_and_metrics
from rwkvjax.train.probe import TextProbe
from rwkvjax.train.step import make_eval_fn, state_norm, to_host
from rwkvjax.train.trainable import Trainable

# the dispatcher's default: with nothing differentiated it runs the fastest forward (benchmarks/RESULTS.md, WKV kernels)


@dataclasses.dataclass(frozen=True)
class GateSettings:
    canary_rel: float = 0.01       # roll back past +1% canary bpb over its start value
    z: float = 6.0                 # roll back at this robust z of the canary change
    window: int = 64               # accepted changes kept for the robust statistics
    min_history: int = 8           # before this many, only the relative bound applies
    mad_floor: float = 1e-3        # bits/byte: the smallest MAD (0.1% of a typical 1-3 bpb canary)
    quarantine_bpb: float = 1.85   # live frozen bpb / canary frozen bpb at or above which windows are out of distribution
    quarantine_grad: float = 1.0   # start-state gradient norm / the canary loss's, at or above which it is a heavy write
    slice_windows: int = 8         # recent held-out windows probed
    slice_every: int = 16          # every n-th live window goes to the held-out slice instead of training
    slice_probe_every: int = 8     # steps between probes of the held-out slice (it is recorded, not decided on)
    probe_tokens: int = 512        # each canary's first tokens, read from the start state as one sequence
    project: bool = True           # remove the update's component that raises the canary loss (first order)
    gram_bytes: int = 32           # n-grams of about this many bytes (8 World tokens, 32 bytes) for the screens
    redundant: float = 0.9         # skip a window when this share of its n-grams was seen in the recent windows
    recent_windows: int = 64       # windows whose 8-grams count as recent
    remember_states: int = 64      # other states (projects, conversations) whose last canary figure and gradient are
                                   # kept; a state switched back to after more others is probed again (same figure)


def base_window(w: Window, vocab_size: int) -> Window:
    """A window of merged units as the base tokens they cover (at most two per unit)."""
    from rwkvjax.merges.dyntok import expand
    return Window(w.session, np.asarray(expand(w.units, w.slots, vocab_size), np.int32), w.nbytes, w.n_base,
                  project=w.project)


def gram_seq(units, n: int) -> list:
    """The n-grams of `units` in order (one, the whole sequence, when it is shorter than n)."""
    u = np.asarray(units, np.int64)
    if len(u) < n:
        return [u.tobytes()]
    v = np.lib.stride_tricks.sliding_window_view(u, n)
    return np.frombuffer(np.ascontiguousarray(v).tobytes(), dtype=f"V{8 * n}").tolist()


def ngrams(units, n: int) -> set:
    return set(gram_seq(units, n))


def longest_run(seq: list, members: set) -> int:
    best = run = 0
    for g in seq:
        run = run + 1 if g in members else 0
        best = max(best, run)
    return best


class RedundancyScreen:
    """Skips windows that carry no new information: a window whose n-grams are nearly all repeats, of each
    other or of the last `recent_windows` windows (a flood of one line, a re-read file). The update gate screens
    live windows with it before training (the session memory has a longer-range screen of its own,
    `train.session_memory.FloodScreen`)."""

    def __init__(self, n: int, redundant: float = 0.9, recent_windows: int = 64):
        self.n, self.redundant = n, redundant
        self._recent: collections.deque[set] = collections.deque(maxlen=recent_windows)
        # the same windows' units: what a checkpoint keeps, so a resumed run screens exactly as this one would
        self._recent_units: collections.deque[list] = collections.deque(maxlen=recent_windows)

    def check(self, units, seq: list | None = None) -> str | None:
        """The reason to skip `units` (None: it brings new information); the window counts as recent either way."""
        seq = gram_seq(units, self.n) if seq is None else seq
        grams = set(seq)
        seen = set().union(*self._recent) if self._recent else set()
        # new information: distinct n-grams not seen in the recent windows, over all the n-grams it has (a
        # window that repeats itself, a flood of one line, is redundant even the first time)
        total = max(len(units) - self.n + 1, 1)
        new = len(grams - seen)
        self._recent.append(grams)
        self._recent_units.append(np.asarray(units).tolist())
        if 1 - new / total >= self.redundant:
            return (f"redundant: {new} of its {total} {self.n}-grams are new (repeats within it and the last "
                    f"{len(self._recent) - 1} windows)")
        return None

    def state_dict(self) -> list:
        return list(self._recent_units)

    def load_state_dict(self, recent_units: list) -> None:
        self._recent.clear()
        self._recent_units.clear()
        for u in recent_units:
            self._recent_units.append(u)
            self._recent.append(ngrams(u, self.n))


def robust_z(x: float, history, mad_floor: float) -> float:
    """(x - median) / (1.4826 MAD), the MAD floored so that a run of near-identical changes does not make
    every small change an outlier."""
    h = np.asarray(history, np.float64)
    med = float(np.median(h))
    mad = max(float(np.median(np.abs(h - med))), mad_floor)
    return (x - med) / (1.4826 * mad)


class SourceScreen:
    """The gate's hold on the live source, before training: every `slice_every`-th live window goes to a held-out
    slice (per project, with per-project states), and `screen` skips windows that carry no new information or
    hold a canary passage. Both are counted in `counts` (the gate's: a screened window counts as quarantined)."""

    def __init__(self, tok, canaries: dict[str, str], settings: GateSettings, counts: collections.Counter, *,
                 per_project: bool = False):
        self.s, self.counts, self.per_project = settings, counts, per_project
        enc = [tok.encode(t) for t in canaries.values()]
        per_token = sum(len(t.encode("utf-8")) for t in canaries.values()) / max(sum(map(len, enc)), 1)
        self.n = max(4, round(settings.gram_bytes / per_token))  # 32 for bytes, ~8 for the World vocabulary
        self.redundancy = RedundancyScreen(self.n, settings.redundant, settings.recent_windows)
        self._canary_grams = set().union(*(ngrams(e, self.n) for e in enc))
        # recent held-out windows, per project (one key, "", without per-project states)
        self.slices: dict[str, collections.deque[Window]] = {}
        self._seen = 0
        self._screened: list[dict] = []  # windows skipped since the last record

    def divert(self, w: Window) -> bool:
        """True when this live window is not trained on: it goes to the held-out slice, or `screen` skips it."""
        self._seen += 1
        if self.s.slice_every and self._seen % self.s.slice_every == 0:
            key = (w.project or "") if self.per_project else ""
            self.slices.setdefault(key, collections.deque(maxlen=self.s.slice_windows)).append(w)
            return True
        reason = self.screen(w)
        if reason is not None:
            self.counts["quarantined"] += 1
            self._screened.append({"session": w.session, "reason": reason})
            return True
        return False

    def screen(self, w: Window) -> str | None:
        seq = gram_seq(w.units, self.n)
        # a verbatim canary passage of about 2 n-grams (64 bytes) or more: longer than shared phrases are
        run = longest_run(seq, self._canary_grams)
        if run > self.n:
            return f"holds a canary passage ({run + self.n - 1} units verbatim)"
        return self.redundancy.check(w.units, seq)

    def slice(self, key: str) -> list[Window]:
        """The held-out windows of project `key` ("" without per-project states)."""
        return list(self.slices.get(key, ()))

    def take_screened(self) -> list[dict]:
        """The windows skipped since the last call (for the step's record)."""
        out, self._screened = self._screened, []
        return out

    def state_dict(self) -> dict:
        return {"seen": self._seen, "slices": {k: [w.to_dict() for w in v] for k, v in self.slices.items()},
                "recent_units": self.redundancy.state_dict(), "screened_pending": self._screened}

    def load_state_dict(self, d: dict) -> None:
        for k, v in d["slices"].items():
            self.slices[k] = collections.deque((Window.from_dict(w) for w in v), maxlen=self.s.slice_windows)
        self._seen = d["seen"]
        self.redundancy.load_state_dict(d["recent_units"])
        self._screened = list(d["screened_pending"])


class CanaryProbe:
    """Reads fixed canary texts with a start state: their bits per byte, the gradient of their loss there, and
    with a session memory the mixture's bits; and the frozen model's bits per byte of live windows."""

    def __init__(self, config, params, tok, canaries: dict[str, str], *, settings: GateSettings, memory=None):
        self.memory = memory
        # a canary is read as a session is: from the start state, on and on (not cut into windows that all
        # restart at S0, where S0's prior would weigh on every position)
        self.probe = TextProbe(config, params, tok, canaries, ctx_len=settings.probe_tokens, max_windows=1,
                               wkv_impl=WkvImpl.AUTO)
        self.params = params
        self.vocab_size = config.vocab_size
        self.frozen_eval = make_eval_fn(config, units=PLAIN, wkv_impl=WkvImpl.AUTO)
        batch = self.probe.batch
        loss = lambda tr: loss_and_metrics(tr, params, batch, config=config, units=PLAIN, wkv_impl="chunked",
                                           remat="none", keep_hidden=memory is not None)
        # value and gradient in one pass: the canary of the state just made, and the direction the next
        # update is projected against
        self._value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))

    def read(self, trainable):
        """(mean canary bits/byte under `trainable`, the canary loss's gradient there, the canaries' final hidden
        states: None without a session memory)."""
        (_, m), g = self._value_and_grad(trainable)
        bpb = float(np.mean(list(self.probe.per_text(to_host(m["window_nll"])).values())))
        return bpb, g, m.get("hidden")

    def canary_and_grad(self, trainable):
        """Mean canary bits/byte under `trainable`, and the gradient of the canary loss there."""
        return self.read(trainable)[:2]

    def canary_mix(self, hidden, memory=None) -> float:
        """Mean canary bits/byte of the mixture: the model whose hidden states these are, and a copy of the
        session memory (`memory`, default the current one), which reads the canaries as one history."""
        bits = self.memory.probe_bits(hidden, self.probe.batch.targets, self.probe.units, memory)
        return float(np.mean(list(self.probe.per_text(bits * LN2 / self.probe.units).values())))

    def bpb(self, trainable, windows: list[Window], *, batch_size: int, ctx_len: int) -> float | None:
        """Bits per byte of `windows` (one batch), each read from `trainable`; None without windows."""
        if not windows:
            return None
        batch = make_batch(windows, [1.0] * len(windows), batch_size=batch_size, ctx_len=ctx_len)
        _, m = self.frozen_eval(trainable, self.params, batch)
        m = to_host(m)
        return float(m["bits"] / max(float(m["bytes"]), 1.0))


class CanaryProjector:
    """A-GEM (Chaudhry et al. 2019, arXiv:1812.00420) on the final update, after AdamW: the learner
    (`train.learner.Learner`, its `projector`) projects each update of the start state onto
    {d : <d, grad canary loss> <= 0}, so learning continues without spending the canary bound. `grad` is the
    canary gradient at the last accepted state; the update gate keeps it (None: read at the state the update
    starts from, as after a resume: it is not kept in checkpoints)."""

    def __init__(self, canary_and_grad, *, enabled: bool = True):
        self.canary_and_grad, self.enabled = canary_and_grad, enabled
        self.grad = None

    def project(self, before: Trainable, after: Trainable) -> tuple[Trainable, float | None]:
        """(`after` projected, the share of |d|^2 removed); (`after`, None) when disabled."""
        if not self.enabled:
            return after, None
        if self.grad is None:
            self.grad = self.canary_and_grad(before)[1]
        g = self.grad
        names = [n for n in ("wkv", "att_shift", "ffn_shift") if getattr(after, n) is not None]
        d = [getattr(after, n) - getattr(before, n) for n in names]
        gv = [getattr(g, n) for n in names]
        dot = float(sum(jnp.vdot(a, b) for a, b in zip(d, gv)))
        if dot <= 0:
            return after, 0.0
        gg = float(sum(jnp.vdot(b, b) for b in gv))
        dd = float(sum(jnp.vdot(a, a) for a in d))
        scale = dot / max(gg, 1e-30)
        out = dataclasses.replace(after, **{n: getattr(before, n) + a - scale * b for n, a, b in zip(names, d, gv)})
        return out, float(dot * dot / max(gg * dd, 1e-30))


class UpdateGate(Hook, StatePart):
    """The judge of each update (a hook that may veto), built from three roles: `sources` (`SourceScreen`, the
    source's held-out slice and screen), `canary` (`CanaryProbe`) and `projector` (`CanaryProjector`, which the
    learner applies: give it to the `Learner`). The figures of other states (projects, conversations) it
    switches between are remembered here (`switch`), bounded by `remember_states`.

    A checkpoint part: host entry `gate`."""

    may_veto = True

    def __init__(self, config, params, tok, canaries: dict[str, str], *, ctx_len: int,
                 settings: GateSettings = GateSettings(), memory=None, per_project: bool = False):
        """`memory`: the run's session memories (`train.session_memory.RunMemory`): the canaries are then also
        scored by the mixture of the model and a copy of the current memory, and the canary bound applies to
        that figure too. `per_project`: a held-out slice per project."""
        self.s = settings
        self.ctx_len = ctx_len
        self.memory = memory
        # The mixture's canary bpb at the run's start (an empty memory), recorded beside its figures. The bound is
        # not taken from it: as the memory learns the user's text its mixer reads the canaries' first tokens worse,
        # +3.5% over that start after 114 clean steps of the red-team benchmark (benchmarks/redteam.py), so such a
        # bound would stop the memory within the first hundred steps. The reference is the model's start figure
        # (5% above the mixture's there): with its memory the system must not read general text worse than the
        # model it started from, by more than the bound.
        self.start_canary_mix: float | None = None
        self.last_canary_mix: float | None = None   # ... after the last accepted update
        self.counts = collections.Counter()
        self.sources = SourceScreen(tok, canaries, settings, self.counts, per_project=per_project)
        self.canary = CanaryProbe(config, params, tok, canaries, settings=settings, memory=memory)
        self.projector = CanaryProjector(self.canary.canary_and_grad, enabled=settings.project)
        self.key = ""  # the project whose state the learner holds
        self.start_canary: float | None = None
        self.last_canary: float | None = None
        self._last: dict[str, float] = {}  # last accepted canary bpb of the other projects' states
        self._grads: dict[str, object] = {}  # ... and the canary gradient there
        self.deltas: collections.deque[float] = collections.deque(maxlen=settings.window)
        self.probe_seconds = 0.0
        self.ref_grad: float | None = None  # the canary loss's start-state gradient norm at the run's start
        self._steps = 0

    def switch(self, key: str, trainable) -> None:
        """The learner now holds project `key`'s state (`trainable`): its canary changes are measured against
        its own past (a new project's state is probed as it starts)."""
        if key == self.key:
            return
        if self.last_canary is not None:
            # most recently left last: a server's conversations come and go, so only the newest are remembered (an
            # S0-sized gradient each; one per conversation for the server's life was a leak)
            self._last.pop(self.key, None)
            self._grads.pop(self.key, None)
            self._last[self.key] = self.last_canary
            self._grads[self.key] = self.projector.grad
            while len(self._last) > self.s.remember_states:
                oldest = next(iter(self._last))
                del self._last[oldest]
                self._grads.pop(oldest, None)
        self.key = key
        if self.start_canary is not None:
            if key in self._last:
                self.last_canary, self.projector.grad = self._last[key], self._grads.get(key)
            else:
                self.last_canary, self.projector.grad = self.canary.canary_and_grad(trainable)

    def after_step(self, info: StepInfo) -> Veto | None:
        t0 = time.perf_counter()
        learner, rec = info.learner, info.record
        screened = self.sources.take_screened()
        if screened:
            rec["screened"] = screened
        self._steps += 1
        h0 = None
        if self.start_canary is None:  # the state before the first update of this run
            self.start_canary, g0, h0 = self.canary.read(learner.trainable0)
            self.ref_grad = float(state_norm(g0))
            # the state this update started from (a resumed run's is not the zero state)
            self.last_canary, self.projector.grad = (self.start_canary, g0) if info.before is None else \
                self.canary.canary_and_grad(info.before.trainable)
        if self.memory is not None and self.start_canary_mix is None:
            # the frozen model with the memory as this run found it (a checkpoint from before the memory: empty)
            if h0 is None:
                h0 = self.canary.read(learner.trainable0)[2]
            self.start_canary_mix = self.last_canary_mix = self.canary.canary_mix(h0, self.memory.before())
        if info.update.projected_share is not None:  # the learner projected the update
            rec["projected_share"] = info.update.projected_share
        canary, cgrad, hidden = self.canary.read(learner.trainable)
        mix = None
        if self.memory is not None:
            t_mix = time.perf_counter()
            mix = self.canary.canary_mix(hidden)
            rec["canary_mix_s"] = time.perf_counter() - t_mix  # what the memory adds to the probe
        live = info.update.live
        # the frozen model reads base tokens: with dynamic merges the windows are expanded first (merged units
        # are ids it does not have; read as they are, its figure was NaN and the quarantine rule never fired)
        merged = any(w.slots is not None for w in live)
        plain = [w if w.slots is None else base_window(w, self.canary.vocab_size) for w in live]
        frozen = self.canary.bpb(learner.trainable0, plain, batch_size=len(live),
                           ctx_len=learner.ctx_len * (2 if merged else 1))
        grad = float(info.update.metrics["state_grad_norm"]) / max(self.ref_grad, 1e-30)
        ood = None if frozen is None else frozen / self.start_canary
        delta = canary - self.last_canary
        rec.update(probed_canary_bpb=canary, canary_start_bpb=self.start_canary, canary_delta=delta,
                   ood_ratio=ood, write_ratio=grad,
                   frozen_live_bpb=frozen)
        if mix is not None:
            rec.update(probed_canary_mix_bpb=mix, canary_mix_start_bpb=self.start_canary_mix)
        if self._steps % self.s.slice_probe_every == 0:
            rec["heldout_slice_bpb"] = self.canary.bpb(learner.trainable, self.sources.slice(self.key),
                                                       batch_size=self.s.slice_windows, ctx_len=self.ctx_len)
        reason = None
        if canary > self.start_canary * (1 + self.s.canary_rel):
            reason = (f"canary {canary:.4f} bpb is {100 * (canary / self.start_canary - 1):.2f}% above its start "
                      f"{self.start_canary:.4f} (bound {100 * self.s.canary_rel:.1f}%)")
        elif len(self.deltas) >= self.s.min_history and delta > self.s.mad_floor:
            z = robust_z(delta, self.deltas, self.s.mad_floor)
            if z >= self.s.z:
                reason = f"canary change {delta:+.5f} bpb is an outlier (robust z {z:.1f} >= {self.s.z})"
        quarantined = False
        if reason is None and ood is not None and ood >= self.s.quarantine_bpb and grad >= self.s.quarantine_grad:
            quarantined = True
            reason = (f"out of distribution (frozen {frozen:.3f} bpb, {ood:.2f}x the canaries' >= "
                      f"{self.s.quarantine_bpb}) and a heavy write (start-state gradient {grad:.2f}x the canaries' "
                      f">= {self.s.quarantine_grad})")
        memory_reason = None
        if reason is None and mix is not None and mix > self.start_canary * (1 + self.s.canary_rel):
            # the memory's learning of this step is undone, S0's update is judged by the model alone (above)
            memory_reason = (f"canary with the session memory {mix:.4f} bpb is "
                             f"{100 * (mix / self.start_canary - 1):.2f}% above the model's at the start "
                             f"{self.start_canary:.4f} (bound {100 * self.s.canary_rel:.1f}%)")
            self.memory.undo()
            mix = self.canary.canary_mix(hidden)  # the new start state with the memory as the step found it
        self.probe_seconds += time.perf_counter() - t0
        rec["probe_s"] = time.perf_counter() - t0
        if reason is None:
            self.deltas.append(delta)
            self.last_canary, self.projector.grad = canary, cgrad
            self.counts["accepted"] += 1
            rec.update(gate="accepted", gate_reason=None, canary_bpb=canary)
            if mix is not None:
                self.last_canary_mix = rec["canary_mix_bpb"] = mix
                rec.update(memory_gate="accepted" if memory_reason is None else "rolled_back",
                           memory_gate_reason=memory_reason)
                if memory_reason is not None:
                    self.counts["memory_rolled_back"] += 1
                    rec["memory"] = self.memory.memory.stats()
            return None
        decision = "quarantined" if quarantined else "rolled_back"
        self.counts[decision] += 1
        rec.update(gate=decision, gate_reason=reason, canary_bpb=self.last_canary)
        if mix is not None:
            rec["canary_mix_bpb"] = self.last_canary_mix
        return Veto(reason)

    def state_dict(self) -> dict:
        return {"start_canary": self.start_canary, "last_canary": self.last_canary, "ref_grad": self.ref_grad,
                "deltas": list(self.deltas), "counts": dict(self.counts), "probe_seconds": self.probe_seconds,
                "key": self.key, "last_by_key": self._last, **self.sources.state_dict(),
                "start_canary_mix": self.start_canary_mix, "last_canary_mix": self.last_canary_mix}

    def load_state_dict(self, d: dict) -> None:
        self.start_canary, self.last_canary, self.ref_grad = d["start_canary"], d["last_canary"], d["ref_grad"]
        self.deltas.extend(d["deltas"])
        self.counts.update(d["counts"])
        self.sources.load_state_dict(d)
        self.probe_seconds, self.key = d["probe_seconds"], d["key"]
        self._last = dict(d["last_by_key"])
        # a checkpoint from before the session memory (or of a run without one) has none: measured afresh
        self.start_canary_mix, self.last_canary_mix = d.get("start_canary_mix"), d.get("last_canary_mix")

    def checkpoint_host(self) -> dict:
        return {"gate": self.state_dict()}

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        if host.get("gate"):
            self.load_state_dict(host["gate"])
