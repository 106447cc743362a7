"""What the training record carries for the dashboard: bits per byte by role (window roles, per-unit NLL), the
replay priority histogram, the top merges and the gate's counts."""

from __future__ import annotations

import collections
import math
import threading

import numpy as np

import rwkvjax
from ingest.events import AssistantText, ToolResult, UserText
from ingest.render import ROLES, render_session
from rwkvjax.merges.dyntok import DynamicTokenizer, DynTokSettings, expand
from rwkvjax.model.init import init_params
from rwkvjax.text.tokenizer import ByteTokenizer
from rwkvjax.train.data import Window, WindowAssembler, role_bits_per_byte
from rwkvjax.train.hooks import RunStats, priority_histogram
from rwkvjax.train.learner import Learner
from rwkvjax.train.loop import train_loop
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.replay import ReplayBuffer, ReplaySettings
from rwkvjax.train.trainable import init_trainable

TOK = ByteTokenizer()
SMALL = rwkvjax.Architecture(256, 64, 1, 128, 32, 32, 32, 32)


def _events():
    common = dict(session="s1", parent=None, cwd="/w", timestamp=None)
    return [UserText(uuid="u0", seq=0, text="please list the files in src/ and say which is largest " * 2, **common),
            AssistantText(uuid="u1", seq=1, text="I will look at the folder first, then compare sizes. " * 2,
                          message_id="m1", **common),
            ToolResult(uuid="u2", seq=2, name="Bash", output="a.py 120\nb.py 4410\nc.py 87\n" * 3, is_error=False,
                       tool_use_id="t1", **common)]


def _byte_roles(events) -> list[int]:
    """The role of every byte of the session's text, from the renderer's spans (ASCII text: chars = bytes)."""
    r = render_session(events)
    out = [-1] * len(r.text)
    for s in r.spans:
        out[s.start:s.end] = [ROLES.index(s.role)] * (s.end - s.start)
    return out


def test_windows_carry_the_role_of_every_unit():
    asm = WindowAssembler(TOK, 32)
    wins = [w for ev in _events() for w in asm.feed(ev)] + asm.flush()
    roles = np.concatenate([w.roles for w in wins]).tolist()
    assert roles == _byte_roles(_events())  # bytes = tokens here; "\n\n" between events is boilerplate
    assert {ROLES[r] for r in roles} == {"user", "assistant", "tool_output", "boilerplate"}
    for w in wins:
        assert w.role_bytes.sum() == w.nbytes
        assert np.array_equal(w.role_bytes, np.bincount(w.roles, minlength=len(ROLES)))


def test_a_merged_unit_takes_the_role_of_its_first_base_token():
    dyn = DynamicTokenizer(DynTokSettings(v_base=256, window=64, threshold=2, n_slots=8), TOK.decode_bytes)
    asm = WindowAssembler(TOK, 24, dyntok=dyn)
    wins = [w for ev in _events() for w in asm.feed(ev)] + asm.flush()
    byte_roles, at = _byte_roles(_events()), 0
    assert any(len(expand(w.units, w.slots, 256)) > len(w.units) for w in wins), "no merge happened"
    for w in wins:
        expected = []
        for u in w.units.tolist():
            expected.append(byte_roles[at])
            at += 1 if u < 256 else 2
        assert w.roles.tolist() == expected
        assert w.role_bytes.sum() == w.nbytes
    assert at == len(byte_roles)


def test_pending_roles_survive_a_checkpoint():
    asm = WindowAssembler(TOK, 512)
    for ev in _events()[:2]:
        assert asm.feed(ev) == []  # all still pending
    back = WindowAssembler(TOK, 512)
    back.load_state_dict(asm.state_dict())
    assert back.roles == asm.roles and back.pending == asm.pending
    old = {k: v for k, v in asm.state_dict().items() if k != "roles"}  # a checkpoint from before roles
    back.load_state_dict(old)
    assert back.roles == {"s1": [-1] * len(asm.pending["s1"])}
    w = back.flush()[0]
    assert (w.roles == -1).all() and w.role_bytes.sum() == 0  # unknown roles count nowhere


def test_role_bits_per_byte_sums_nll_over_units_of_each_role():
    w1 = Window("a", np.arange(1, 5, dtype=np.int32), 8, 4, roles=np.asarray([0, 0, 1, -1], np.int8),
                role_bytes=np.asarray([3, 4, 0, 0, 0, 0]))
    w2 = Window("b", np.arange(1, 3, dtype=np.int32), 2, 2, roles=np.asarray([1, 1], np.int8),
                role_bytes=np.asarray([0, 2, 0, 0, 0, 0]))
    nll = np.asarray([[1.0, 2.0, 3.0, 9.0, 0.0], [0.5, 0.25, 0.0, 0.0, 0.0]])
    got = role_bits_per_byte([w1, w2, Window("c", np.ones(2, np.int32), 2, 2)], np.vstack([nll, nll[:1]]))
    ln2 = math.log(2)
    assert set(got) == {"user", "assistant"}
    assert math.isclose(got["user"], 3.0 / ln2 / 3) and math.isclose(got["assistant"], 3.75 / ln2 / 6)


def test_learner_per_unit_nll_adds_up_to_the_live_bits():
    params = init_params(SMALL, 0, live_output=True)
    tr0 = init_trainable(SMALL)
    tx = state_tuning_optimizer(tr0, OptimConfig(state_lr=0.1, decay_steps=10))
    lr = Learner(SMALL, params, tr0, tx, ctx_len=32, live_per_step=2, replay_per_step=0, max_traces=None)
    asm = WindowAssembler(TOK, 32)
    live = [w for ev in _events() for w in asm.feed(ev)][:2]
    upd = lr.update(live)
    per_role = role_bits_per_byte(live, upd.unit_nll)
    nbytes = sum(w.role_bytes for w in live)
    total_bits = sum(per_role[ROLES[i]] * nbytes[i] for i in range(len(ROLES)) if nbytes[i])
    assert math.isclose(total_bits, upd.live_bits, rel_tol=1e-5)


class _Gate:
    counts = collections.Counter(accepted=3, quarantined=1)


def test_run_stats_adds_histogram_merges_and_gate_counts_on_logged_steps():
    params = init_params(SMALL, 0, live_output=True)
    tr0 = init_trainable(SMALL)
    tx = state_tuning_optimizer(tr0, OptimConfig(state_lr=0.1, decay_steps=10))
    lr = Learner(SMALL, params, tr0, tx, ctx_len=16, live_per_step=1, replay_per_step=1,
                 replay=ReplayBuffer(ReplaySettings(capacity=8)), max_traces=None)
    dyn = DynamicTokenizer(DynTokSettings(v_base=256, window=64, threshold=2, n_slots=8), TOK.decode_bytes)
    dyn.encode(TOK.encode("abababab cdcdcdcd abab cdcd " * 4))
    records = []

    class Keep(RunStats):
        def after_step(self, info):
            super().after_step(info)
            records.append(dict(info.record))

    rng = np.random.default_rng(0)
    batches = ([Window(f"s{i}", rng.integers(1, 256, 16).astype(np.int32), 16, 16)] for i in range(4))
    train_loop(lr, batches, [Keep(2, lambda: dyn, _Gate())], step=0, steps=4, stop=threading.Event(),
               describe=lambda step, upd: {"step": step})
    assert [r["step"] for r in records] == [2, 4]
    last = records[-1]
    hist = last["replay_hist"]
    assert sum(hist["counts"]) == len(lr.replay) == 4 and len(hist["edges"]) == 17
    assert hist["edges"][0] == round(float(lr.replay.priority.min()), 4)
    assert hist["edges"][-1] == round(float(lr.replay.priority.max()), 4)
    top = dyn.top_merges(8)
    assert [(m["text"], m["uses"]) for m in last["top_merges"]] == [(m["text"], m["uses"]) for m in top]
    assert top and top[0]["uses"] > 0
    assert last["gate_counts"] == {"accepted": 3, "rolled_back": 0, "quarantined": 1}


def test_priority_histogram_of_equal_priorities():
    h = priority_histogram([2.0, 2.0, 2.0], 4, "reducible")
    assert sum(h["counts"]) == 3 and h["unit"].startswith("reducible")
