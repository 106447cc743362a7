"""Test-time training in the server: a conversation adapts its own state, never the shared ones."""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import openai

import rwkvjax
from rwkvjax.io.states import StateStore
from rwkvjax.memory.memory import SessionMemory
from rwkvjax.train.run import DEMO_MODEL
from tests.serve.conftest import running_server
from tests.serve.test_server import _post


def _wait_for(store: StateStore, name: str, pred=lambda r: True, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        rec = next((r for r in store.records() if r.name == name), None)
        if rec is not None and pred(rec):
            return rec
        time.sleep(0.2)
    raise AssertionError(f"state {name} did not appear in {timeout} s")


def test_conversation_state_is_tuned_between_turns_and_shared_states_are_untouched(tmp_path):
    from rwkvjax.model.params import params_hash
    from rwkvjax.text.tokenizer import for_vocab, tokenizer_id
    model = rwkvjax.load(DEMO_MODEL)
    store = StateStore(tmp_path / "states")
    config = model.arch
    import numpy as np
    shared = store.put("proj", np.zeros((config.n_layer, config.n_head, config.head_size, config.head_size),
                                        np.float32), base_hash=params_hash(model.params),
                       tokenizer=tokenizer_id(for_vocab(config.vocab_size)))
    # a shared fork named like the conversation below (`proj/s1`, as `state fork proj proj/s1` makes): a session
    # named `s1` must never replace it
    fork = store.fork("proj", "proj/s1")
    files = sorted((tmp_path / "states").glob(f"{shared.id}.*")) + sorted((tmp_path / "states").glob(f"{fork.id}.*"))
    before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    with running_server(model, states=str(tmp_path / "states"), ttt=True, ttt_steps=2) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        msgs = [{"role": "user", "content": "The build fails in parse_config when the YAML file has tabs. "
                                            "Where does parse_config read the file?"}]
        r1 = c.chat.completions.create(model="proj", messages=msgs, max_tokens=16, temperature=0,
                                       extra_body={"session": "s1"})
        rec1 = _wait_for(store, "conv/proj/s1")
        assert rec1.parent == shared.id and rec1.source["ttt"] == "conv/proj/s1" and rec1.source["steps"] == 2
        # the conversation's memory is stored with its state, marked with what it has read (prompt and reply)
        assert store.memory_file(rec1) is not None
        assert rec1.source["memory_tokens"] == r1.usage.prompt_tokens + r1.usage.completion_tokens
        ids = [m.id for m in c.models.list().data]
        assert "conv/proj/s1" in ids and "proj/s1" in ids
        msgs += [{"role": "assistant", "content": r1.choices[0].message.content},
                 {"role": "user", "content": "And where are tabs rejected?"}]
        r2 = c.chat.completions.create(model="proj", messages=msgs, max_tokens=8, temperature=0,
                                       extra_body={"session": "s1"})
        assert r2.choices[0].finish_reason in ("stop", "length")
        rec2 = _wait_for(store, "conv/proj/s1", lambda r: r.source["tokens"] > rec1.source["tokens"])
        assert rec2.id == rec1.id  # the conversation keeps one state, updated in place
        assert rec2.source["memory_tokens"] == r2.usage.prompt_tokens + r2.usage.completion_tokens
        # turn 2 absorbed only what turn 1's memory had not read: its prompt repeats turn 1
        assert SessionMemory.load(store.memory_file(rec2)).symbols_seen == rec2.source["memory_tokens"]
        # without a session nothing is tuned
        c.chat.completions.create(model="proj", messages=msgs[:1], max_tokens=4, temperature=0)
        st, _, e = _post(url, "/v1/chat/completions", json.dumps(
            {"model": "proj", "messages": msgs[:1], "session": "bad name!"}).encode())
        assert st == 400 and e["error"]["param"] == "session"
    after = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert after == before  # the shared state and the fork named like the session were never written
    assert sorted(r.name for r in store.records()) == ["conv/proj/s1", "proj", "proj/s1"]
    assert store.get("proj/s1").id == fork.id and store.get("proj/s1").source == {"fork": shared.id}
    shutil.rmtree(tmp_path / "states")


def test_the_tuner_keeps_nothing_per_conversation_but_a_bounded_window(tmp_path):
    """A server sees conversation after conversation: what the tuner and its gate hold in memory stays bounded
    (the gate's per-state canary gradients, the turn log; nothing per finished conversation), and a conversation's
    next turn still trains only on its new text (read from its stored state's record)."""
    import dataclasses

    from rwkvjax.model.params import params_hash
    from rwkvjax.serve.ttt import ConversationTuner, TTTSettings
    from rwkvjax.text.tokenizer import tokenizer_id
    loaded = rwkvjax.load(DEMO_MODEL)
    config, params = loaded.arch, loaded.params
    tok = loaded.tokenizer
    store = StateStore(tmp_path / "states")
    tuner = ConversationTuner(config, params, tok, store, base_hash=params_hash(params), tokenizer_id=tokenizer_id(tok),
                              settings=TTTSettings(steps=1, ctx_len=64, windows=1, log_turns=3))
    tuner.gate.s = dataclasses.replace(tuner.gate.s, remember_states=2)
    try:
        text = "User: list the files\n\nAssistant: ls -la shows README.md and src/\n\n"
        for i in range(6):
            tuner.submit(f"conv/base/c{i}", None, text + f"turn {i}\n")
            assert tuner.wait(f"conv/base/c{i}") < tuner.s.wait_s
            assert len(tuner.gate._grads) <= 2 and len(tuner.gate._last) <= 2
        assert len(tuner.log) == 3 and not tuner.pending
        assert [r["conversation"] for r in tuner.log] == ["conv/base/c3", "conv/base/c4", "conv/base/c5"]
        # the next turn of c0 (forgotten by the gate, its state in the store) trains on its new text only
        assert tuner._start("conv/base/c0", None)[2] == len(tok.encode(text + "turn 0\n"))
        more = text + "turn 0\n" + "User: and the tests?\n\nAssistant: pytest -q\n\n"
        rec = tuner.tune("conv/base/c0", None, more)
        assert rec["tokens"] == len(tok.encode(more)) == tuner._start("conv/base/c0", None)[2]
    finally:
        tuner.stop()
