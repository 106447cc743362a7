"""The session memory inside `train` (issue 23): every live window scored by the model of the start state before
the update and the memory before it learns the window, then learned once; screened, quarantined and vetoed windows
never reach it; a flood is kept out; saved atomically with the step, restored bit for bit after SIGKILL, published
with the named states; settings checked on resume."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

from benchmarks.common.sessions import write_session
from rwkvjax.errors import CheckpointMismatch, ConfigError
from rwkvjax.io.checkpoint import TrainCheckpointer
from rwkvjax.memory.memory import MemorySettings, SessionMemory
from rwkvjax.train.config import TrainConfig
from rwkvjax.train.gate import RedundancyScreen
from rwkvjax.train.run import DEMO_TRACES, Trainer
from rwkvjax.train.session_memory import GLOBAL, FloodScreen, RunMemory, checkpoint_memory, window_paths
from rwkvjax.train.trainable import init_trainable
from tests.conftest import REPO
from tests.tools.kill_resume import run_killed

MB = 8.0  # small memories: the per-step copies stay cheap


@pytest.fixture(autouse=True)
def _fresh_trace_counter():
    chex.clear_trace_counter()  # every Trainer compiles its own step


def _cfg(ckpt, model_file, **kw):
    base = dict(ckpt_dir=str(ckpt), source=(str(DEMO_TRACES),), steps=5, ctx_len=32, merges=False,
                replay_per_step=2, save_every=1, keep=10, model=str(model_file), gate=False, lr=1.0,
                memory_mb=MB)
    return TrainConfig(**{**base, **kw})


def _records(ckpt) -> list[dict]:
    return [json.loads(x) for x in (Path(ckpt) / "metrics.jsonl").read_text().splitlines()]


def _arrays(mem: SessionMemory) -> dict:
    return mem.state_dict()[1]


def _assert_same(a: SessionMemory, b: SessionMemory) -> None:
    assert a.settings == b.settings
    x, y = _arrays(a), _arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _history(mem: SessionMemory) -> bytes:
    """The symbols the memory learned, oldest first (every test here stays far below the ring's capacity)."""
    n = mem.symbols_seen
    hist = _arrays(mem)["hist"]
    assert n <= len(hist)
    return bytes(hist[:n].astype(np.uint8))


class Spy:
    """Records what the memory was given before each step: the live windows and the start state, and the windows
    it kept to learn (its flood screen may skip some)."""

    def __init__(self, monkeypatch):
        self.steps, self.kept = [], []
        real = RunMemory.prepare

        def prepare(mem, live, trainable):
            self.steps.append((list(live), np.array(trainable.wkv)))
            real(mem, live, trainable)
            self.kept.append(list(mem.pending.windows))
        monkeypatch.setattr(RunMemory, "prepare", prepare)


def test_live_windows_are_scored_by_the_state_before_the_update_then_learned_once(tmp_path, model_file, model,
                                                                                   monkeypatch):
    spy = Spy(monkeypatch)
    tr = Trainer(_cfg(tmp_path / "ck", model_file, steps=6), model=model)
    tr.run(progress=False)
    recs = _records(tmp_path / "ck")
    assert len(recs) == len(spy.steps) == 6 and all(r["replay_windows"] > 0 for r in recs[1:])
    for r in recs:
        # the model inside the mixture read the window from the same start state the train step did (before the
        # update: with --lr 1.0 every update moves S0 far enough to change these figures)
        assert r["memory_lm_bpb"] == pytest.approx(r["live_bits_per_byte"], rel=1e-5)
        assert r["memory_live_bpb"] is not None and r["memory_windows"] == r["live_windows"] == 1
    # the same windows, scored and then learned by a fresh memory from the captured start states, give the same
    # figures and the same memory bit for bit: nothing else was learned (no replayed window, nothing twice)
    config, params = model.arch, model.params
    settings = MemorySettings.for_vocab(config.vocab_size, MB)
    ref, screen = SessionMemory(settings), FloodScreen.for_memory(settings)
    for (live, wkv), r in zip(spy.steps, recs):
        state = dataclasses.replace(init_trainable(config), wkv=wkv)
        ids = [np.asarray(w.units, np.int64) for w in live]
        assert all(screen.check(u) is None for u in ids)  # (nothing here is a repeat)
        paths = window_paths(params, config, state, ids, rows=1, length=32, nbits=8)
        bits = sum(float(ref.score(st, b, u).sum()) for u, (st, b) in zip(ids, paths))
        assert bits / sum(w.nbytes for w in live) == r["memory_live_bpb"]
    _assert_same(tr.memory.memory, ref)
    assert ref.symbols_seen == sum(r["base_tokens"] for r in recs) == sum(r["memory_symbols"] for r in recs)
    assert recs[-1]["memory"]["symbols_seen"] == ref.symbols_seen


def test_with_merges_the_memory_learns_base_tokens(tmp_path, model_file, model, monkeypatch):
    spy = Spy(monkeypatch)
    tr = Trainer(_cfg(tmp_path / "ck", model_file, steps=8, merges=True, merge_slots=16, gate=True,
                      gate_slice_every=0), model=model)
    tr.run(progress=False)
    from rwkvjax.merges.dyntok import expand
    recs = _records(tmp_path / "ck")
    assert len(recs) == len(spy.kept) == 8
    windows = [w for kept, r in zip(spy.kept, recs) if r["gate"] == "accepted" for w in kept]  # vetoed: undone
    assert any(w.slots is not None and (w.units >= 256).any() for w in windows), "no merged unit was trained"
    text = b"".join(bytes(expand(w.units, w.slots, 256)) for w in windows)
    assert _history(tr.memory.memory) == text
    for r in recs:
        assert r["memory_lm_bpb"] > 0 and r["memory_live_bpb"] > 0
        assert np.isfinite(r["frozen_live_bpb"])  # the gate's frozen model reads the base tokens too


def test_a_vetoed_step_leaves_the_memory_as_it_was(tmp_path, model_file, model):
    """The gate rolls back every step here (the model's canary start figure is set impossibly low): each veto must
    undo the memory's learning with the update, and the flood screen's record of the dropped windows."""
    tr = Trainer(_cfg(tmp_path / "ck", model_file, steps=3, gate=True), model=model)
    tr.gate.start_canary = tr.gate.last_canary = 1e-3
    tr.gate.ref_grad = 1.0
    tr.run(progress=False)
    recs = _records(tmp_path / "ck")
    assert [r["gate"] for r in recs] == ["rolled_back"] * 3
    assert all(r["memory_live_bpb"] is not None and r["memory"]["symbols_seen"] == 0 for r in recs)
    _assert_same(tr.memory.memory, SessionMemory(MemorySettings.for_vocab(256, MB)))
    assert checkpoint_memory(tmp_path / "ck").symbols_seen == 0
    # nor does the flood screen remember the dropped windows (their text, seen again, must still be learned)
    assert not tr.memory.screen.table.any()


def test_past_the_canary_bound_with_the_memory_only_the_memorys_learning_is_undone(tmp_path, model_file, model,
                                                                                    monkeypatch):
    """The mixture is made to read the canaries far worse than the model did at the start: every step's update
    of S0 stands (judged by the model's canaries, as without a memory), the memory's learning of it is undone."""
    from rwkvjax.train.gate import CanaryProbe
    real = CanaryProbe.canary_mix
    monkeypatch.setattr(CanaryProbe, "canary_mix", lambda probe, *a, **k: 1.5 * real(probe, *a, **k) + 10.0)
    tr = Trainer(_cfg(tmp_path / "ck", model_file, steps=3, gate=True), model=model)
    tr.run(progress=False)
    recs = _records(tmp_path / "ck")
    assert [(r["gate"], r["memory_gate"]) for r in recs] == [("accepted", "rolled_back")] * 3
    assert all("canary with the session memory" in r["memory_gate_reason"] for r in recs)
    assert all(r["memory"]["symbols_seen"] == 0 for r in recs)
    assert recs[-1]["gate_counts"]["memory_rolled_back"] == 3
    assert np.abs(np.asarray(tr.learner.trainable.wkv)).max() > 0  # S0 learned
    _assert_same(tr.memory.memory, SessionMemory(MemorySettings.for_vocab(256, MB)))
    from rwkvjax.eval.inspect import format_inspect, inspect
    rep = inspect(tmp_path / "ck")
    assert rep["gate"]["counts"]["memory_rolled_back"] == 3
    assert "its learning undone in 3 accepted steps" in format_inspect(rep)


def test_the_gate_probes_the_canaries_with_a_copy_of_the_memory(tmp_path, model_file, model):
    from rwkvjax.train.probe import default_canaries, read_texts
    tr = Trainer(_cfg(tmp_path / "ck", model_file, steps=4, gate=True, gate_slice_every=0), model=model)
    tr.run(progress=False)
    recs = _records(tmp_path / "ck")
    accepted = [r for r in recs if r["gate"] == "accepted"]
    assert accepted and all(r["probed_canary_mix_bpb"] > 0 and r["canary_mix_start_bpb"] > 0 for r in recs)
    assert all(0 < r["canary_mix_s"] < r["probe_s"] for r in recs)
    assert all(r["canary_mix_bpb"] == r["probed_canary_mix_bpb"] for r in accepted if r["memory_gate"] == "accepted")
    # the memory learned the accepted steps' windows and nothing of the canaries it was probed with
    mem = tr.memory.memory
    assert mem.symbols_seen == sum(r["memory_symbols"] for r in accepted) > 0
    hist = _history(mem)
    for text in read_texts(default_canaries()).values():
        probe = text.encode()[:512]
        assert not any(probe[i:i + 48] in hist for i in range(0, len(probe) - 48, 48))


def _flood_stream(folder: Path, line: str, repeats: int) -> None:
    clean = (DEMO_TRACES / "-home-dev-shopcart").glob("*.jsonl")
    for f in clean:
        shutil.copy(f, folder / f.name)
    write_session(folder, line * repeats, start="2026-01-09T00:00:00Z", sid="flood")


@pytest.mark.parametrize("gate", [True, False])
def test_screened_windows_never_reach_the_memory(tmp_path, model_file, model, gate):
    src = tmp_path / "src" / "-home-dev-shopcart"
    src.mkdir(parents=True)
    line = "ERROR: connection reset by peer (retrying)\n"
    _flood_stream(src, line, 200)
    ctx = 128
    tr = Trainer(_cfg(tmp_path / "ck", model_file, steps=None, source=(str(tmp_path / "src"),), gate=gate,
                      gate_slice_every=0, save_every=1000, ctx_len=ctx), model=model)
    tr.run(progress=False)
    recs = _records(tmp_path / "ck")
    flooded = [w for r in recs for w in (r.get("screened") or []) + (r.get("memory_screened") or [])
               if w["session"] == "flood"]
    assert len(flooded) >= 200 * len(line) // ctx - 3  # nearly every window of the flood was kept out
    # what reached the memory holds the flood line at most as often as two windows could (where it starts, and
    # the first window of it: a window of one line holds 43 of its 97 32-grams once, too few repeats to screen)
    assert _history(tr.memory.memory).count(line.encode()) <= 2 * (ctx // len(line) + 1)
    if not gate:  # without the gate, S0 trained on the flood; only the memory's own screen kept it out
        assert any("flood" in r["live_sessions"] for r in recs)
        assert all("flood:" in w["reason"] for r in recs for w in r.get("memory_screened") or [])


def test_a_file_read_again_and_again_is_learned_once(model):
    """A file longer than the gate's 64 recent windows, read five times in a row: the gate's screen lets every
    re-read through; the memory's flood screen keeps them out, so the memory is exactly what it was after the
    first read (measured harm without it: benchmarks/redteam.py)."""
    config, params = model.arch, model.params
    ctx = 64
    rng = np.random.default_rng(0)
    clean = rng.integers(32, 127, 40 * ctx)
    file = rng.integers(32, 127, 100 * ctx)  # 100 windows > the gate's 64
    windows = lambda a: [a[i:i + ctx] for i in range(0, len(a), ctx)]
    gate_screen = RedundancyScreen(32, 0.9, 64)
    assert all(gate_screen.check(w) is None for w in windows(np.concatenate([clean] + [file] * 5)))

    def fed(stream) -> tuple[RunMemory, int]:
        settings = MemorySettings.for_vocab(256, MB)
        run = RunMemory(settings, config=config, params=params, ctx_len=ctx, live_per_step=1, merges=False,
                        per_project=False, screen=FloodScreen.for_memory(settings))
        tr, skipped = init_trainable(config), 0
        from rwkvjax.train.data import Window
        for u in windows(stream):
            run.prepare([Window("s", u.astype(np.int32), len(u), len(u))], tr)
            skipped += len(run.pending.screened)
            run.learn(undoable=False)
        return run, skipped

    once, skipped_once = fed(np.concatenate([clean, file]))
    many, skipped_many = fed(np.concatenate([clean] + [file] * 5))
    assert skipped_once == 0 and skipped_many == 4 * 100
    _assert_same(many.memory, once.memory)


# ----- checkpoints -----

def _train_argv(model, traces, ckpt, steps, extra=()):
    return [sys.executable, str(REPO / "cli.py"), "train", "--source", str(traces), "--model", str(model),
            "--ckpt-dir", str(ckpt), "--steps", str(steps), "--ctx-len", "32", "--replay-per-step", "2",
            "--save-every", "2", "--keep", "100", "--lr", "0.1", "--merges", "--merge-slots", "16",
            "--memory-mb", str(MB), *extra]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def _step_memories(ckpt: Path) -> dict[int, dict]:
    from rwkvjax.train.session_memory import restore_memories
    with TrainCheckpointer(ckpt, read_only=True) as ck:
        return {s: restore_memories(ck, s, ck.restore_host(s)) for s in ck.all_steps()}


def test_resume_after_sigkill_restores_the_memory_bit_for_bit(model_file, tmp_path):
    steps = 10
    traces = tmp_path / "projects"
    shutil.copytree(DEMO_TRACES, traces)
    ref = tmp_path / "uninterrupted"
    r = subprocess.run(_train_argv(model_file, traces, ref, steps), env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

    killed = tmp_path / "killed"
    # killed after steps 3 and 6 of 10, as the run logs them: both kills land whatever the machine's speed
    assert run_killed(_train_argv(model_file, traces, killed, steps), killed, _env(), at_steps=(3, 6)) == 2

    a, b = _step_memories(ref), _step_memories(killed)
    assert max(a) == max(b) == steps and set(b) <= set(a)
    for step in b:  # every step a killed run committed (and resumed from) holds the uninterrupted run's memory
        assert b[step].keys() == a[step].keys() == {GLOBAL}
        _assert_same(b[step][GLOBAL], a[step][GLOBAL])
    assert a[steps][GLOBAL].symbols_seen > 0
    # the memory's files are the user's text: owner-only, like the host state
    for f in (killed / str(steps) / "memory").rglob("*"):
        assert f.stat().st_mode & 0o077 == 0, f


def test_the_named_state_carries_the_memory(tmp_path, model_file, model):
    from rwkvjax.io.states import StateStore
    cfg = _cfg(tmp_path / "ck", model_file, steps=3, states=str(tmp_path / "states"), state_name="shop")
    Trainer(cfg, model=model).run(progress=False)
    store = StateStore(tmp_path / "states")
    path = store.memory_file(store.get("shop"))
    assert path is not None and path.stat().st_mode & 0o077 == 0
    _assert_same(SessionMemory.load(path), checkpoint_memory(tmp_path / "ck"))
    # the same run without the memory publishes a state without one (the stale file is removed)
    chex.clear_trace_counter()
    Trainer(dataclasses.replace(cfg, ckpt_dir=str(tmp_path / "ck2"), memory=False), model=model).run(progress=False)
    assert store.memory_file(store.get("shop")) is None


def test_no_memory_keeps_none(tmp_path, model_file, model):
    Trainer(_cfg(tmp_path / "ck", model_file, steps=2, memory=False), model=model).run(progress=False)
    recs = _records(tmp_path / "ck")
    assert not any(k.startswith("memory") for r in recs for k in r)
    assert checkpoint_memory(tmp_path / "ck") is None
    from rwkvjax.eval.inspect import format_inspect, inspect
    rep = inspect(tmp_path / "ck")
    assert rep["memory"] is None and "session memory" not in format_inspect(rep)


def test_resume_refuses_other_memory_settings(tmp_path, model_file, model):
    cfg = _cfg(tmp_path / "ck", model_file, steps=1)
    Trainer(cfg, model=model).run(progress=False)
    with pytest.raises(CheckpointMismatch, match="trained with --memory; resume it with --memory"):
        Trainer(dataclasses.replace(cfg, steps=2, memory=False), model=model)
    with pytest.raises(CheckpointMismatch, match=f"--memory-mb {MB:g}"):
        Trainer(dataclasses.replace(cfg, steps=2, memory_mb=2 * MB), model=model)
    with pytest.raises(ConfigError, match="--memory-mb 0.5"):
        Trainer(_cfg(tmp_path / "other", model_file, memory_mb=0.5), model=model)
    with pytest.raises(ConfigError, match="--memory-mb"):
        TrainConfig(ckpt_dir="x", memory_mb=float("nan"))


def test_a_checkpoint_from_before_the_memory_resumes_with_an_empty_one(tmp_path, model_file, model, caplog):
    cfg = _cfg(tmp_path / "ck", model_file, steps=2, memory=False)
    Trainer(cfg, model=model).run(progress=False)
    meta = tmp_path / "ck" / "2" / "host" / "metadata"  # the settings as an older version wrote them
    host = json.loads(meta.read_text())
    for k in ("memory", "memory_mb"):
        del host["train_config"][k]
    meta.write_text(json.dumps(host))
    chex.clear_trace_counter()
    with caplog.at_level(logging.WARNING, logger="rwkvjax.train.session_memory"):
        tr = Trainer(dataclasses.replace(cfg, steps=4, memory=True), model=model)
    assert any("holds no session memory" in r.getMessage() for r in caplog.records)
    tr.run(progress=False)
    recs = _records(tmp_path / "ck")
    assert [r["step"] for r in recs if "memory_live_bpb" in r] == [3, 4]
    assert checkpoint_memory(tmp_path / "ck").symbols_seen == sum(r["memory_symbols"] for r in recs[2:]) > 0


def test_inspect_shows_the_memory_beside_the_models(tmp_path, model_file, model):
    from rwkvjax.eval.inspect import format_inspect, inspect
    Trainer(_cfg(tmp_path / "ck", model_file, steps=3, gate=True), model=model).run(progress=False)
    rep = inspect(tmp_path / "ck")
    m, recs = rep["memory"], _records(tmp_path / "ck")
    assert m["memories"][GLOBAL]["symbols_seen"] == recs[-1]["memory"]["symbols_seen"] > 0
    assert m["memories"][GLOBAL]["mb"] <= MB
    bpb = m["bits_per_byte"]
    assert set(bpb) >= {"mixture", "tuned", "frozen"}
    assert bpb["mixture"]["overall"] == pytest.approx(np.mean([r["memory_live_bpb"] for r in recs]))
    assert bpb["frozen"]["overall"] == pytest.approx(np.mean([r["frozen_live_bpb"] for r in recs]))
    text = format_inspect(rep)
    assert "session memory:" in text and "model + memory" in text and "frozen model" in text
    cli = subprocess.run([sys.executable, str(REPO / "cli.py"), "inspect", "--checkpoint", str(tmp_path / "ck"),
                          "--json"], env=_env(), capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and json.loads(cli.stdout)["memory"] == json.loads(json.dumps(m))


def test_score_and_generate_read_the_runs_memory(tmp_path, model_file, model):
    """`score --checkpoint` and `generate --checkpoint` use the run's memory: text the run trained on is nearly free
    to score with it, and greedy generation from a piece of that text continues it as the run saw it."""
    from rwkvjax.eval.config import ScoreConfig
    from rwkvjax.eval.scoring import score_files
    ck = tmp_path / "ck"
    Trainer(_cfg(ck, model_file, steps=8, ctx_len=128), model=model).run(progress=False)
    hist = _history(checkpoint_memory(ck))
    assert len(hist) == 8 * 128
    seen = tmp_path / "seen.txt"
    seen.write_bytes(hist)
    rows = lambda **kw: list(score_files(ScoreConfig(files=(str(seen),), model=str(model_file), checkpoint=str(ck),
                                                     **kw)))
    [(_, n, mix, own), _] = rows()
    [(_, _, alone, none), _] = rows(memory=False)
    assert n == len(hist) and none is None and own == pytest.approx(alone, rel=1e-6)
    assert mix < 0.3 * own  # the run's memory holds this very text

    at = hist.index(b"\n", 300) + 1  # a line of the trained text: its first 48 bytes, then what followed
    prompt, follows = hist[at:at + 48], hist[at + 48:at + 64]
    gen = lambda *extra: subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "generate", "--model", str(model_file), "--checkpoint", str(ck),
         "--prompt", prompt.decode().replace("\\", "\\\\"), "--max-tokens", str(len(follows)), "--temperature", "0",
         *extra], env=_env(), capture_output=True, text=True, timeout=300)
    with_memory, without = gen(), gen("--no-memory")
    assert with_memory.returncode == 0 and without.returncode == 0, with_memory.stderr[-2000:] + without.stderr[-2000:]
    assert with_memory.stdout == follows.decode() + "\n", (prompt, follows, with_memory.stdout)
    assert without.stdout != follows.decode() + "\n"  # the model alone does not know it
