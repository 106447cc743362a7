"""Test-time training between turns (`serve --ttt`): bits per byte of the next turn with and without it, and
the time it adds per turn, on held-out sessions cut into turns.

    PYTHONPATH=. .venv/bin/python benchmarks/ttt.py [--model M] [--traces ../shared/data/claude-projects]
        [--sessions 4] [--turns 8] [--max-tokens 6000] [--steps 4] [--lr 0.05]

A turn starts where a user message starts. Without TTT, turn k+1 is scored after turns 1..k, all read from
the base start state (what the server does without --ttt). With TTT, after turn k the conversation's start
state is tuned on turns 1..k (`serve.ttt.ConversationTuner.tune`, the server's own code, gated), and turn k+1
is scored after turns 1..k read from that state. Held-out = the latest sessions by time (eval's split).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402


def turns_of(session, max_tokens: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of the turns (a turn starts at a user span)."""
    roles = session.roles[:max_tokens]
    starts = [0] + [i for i in range(1, len(roles)) if roles[i] == 0 and roles[i - 1] != 0]
    ends = starts[1:] + [len(roles)]
    return [(a, b) for a, b in zip(starts, ends) if b > a]


def main():
    ap = argparse.ArgumentParser()
    root = Path(sys.path[0])
    ap.add_argument("--model", default=str(root / "rwkvjax" / "data" / "demo_model.safetensors"))
    ap.add_argument("--traces", default=str(root.parent / "shared" / "data" / "claude-projects"))
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.05)
    a = ap.parse_args()
    import jax.numpy as jnp

    import rwkvjax
    from rwkvjax.eval.scoring import score_stream
    from rwkvjax.eval.sessions import load_sessions, split_by_time
    from rwkvjax.io.states import StateStore
    from rwkvjax.model.params import params_hash
    from rwkvjax.model.state import start_state, zero_state
    from rwkvjax.serve.ttt import ConversationTuner, TTTSettings
    from rwkvjax.text.tokenizer import tokenizer_id
    loaded = rwkvjax.load(a.model)
    config, params = loaded.arch, loaded.params
    tok = loaded.tokenizer
    sessions = split_by_time(load_sessions(a.traces, tok), 0.3)
    held = [s for s in sessions if s.heldout][-a.sessions:]
    store = StateStore(tempfile.mkdtemp())
    tuner = ConversationTuner(config, params, tok, store, base_hash=params_hash(params),
                              tokenizer_id=tokenizer_id(tok), settings=TTTSettings(steps=a.steps, lr=a.lr))
    rows, waits = [], []
    for s in held:
        turns = turns_of(s, a.max_tokens)[:a.turns]
        toks = s.tokens
        base_nll, _ = score_stream(params, config, toks[:turns[-1][1]], zero_state(config, 1))
        for k in range(1, len(turns)):
            upto, (b0, b1) = turns[k - 1][1], turns[k]
            text = tok.decode(toks[:upto].tolist())
            t0 = time.perf_counter()
            rec = tuner.tune(f"bench/{s.sid[:8]}", None, text)
            waits.append(time.perf_counter() - t0)
            arr = store.arrays(store.get(f"bench/{s.sid[:8]}"))
            st = start_state(jnp.asarray(arr["wkv"]), 1)
            nll, _ = score_stream(params, config, toks[:b1], st)
            nb = float(s.nbytes[b0:b1].sum())
            rows.append({"session": s.sid[:8], "turn": k + 1, "bytes": nb, "accepted": rec["accepted"],
                         "bits_base": float(base_nll[b0:b1].sum() / np.log(2)),
                         "bits_ttt": float(nll[b0:b1].sum() / np.log(2))})
    tuner.stop()
    nb = sum(r["bytes"] for r in rows)
    d = np.asarray([(r["bits_ttt"] - r["bits_base"]) / r["bytes"] for r in rows])
    out = {"model": a.model, "sessions": len(held), "turns_scored": len(rows), "bytes": nb,
           "next_turn_bpb_without_ttt": sum(r["bits_base"] for r in rows) / nb,
           "next_turn_bpb_with_ttt": sum(r["bits_ttt"] for r in rows) / nb,
           "per_turn_delta_mean": float(d.mean()), "per_turn_delta_se": float(d.std(ddof=1) / np.sqrt(len(d))),
           "turns_better": int((d < 0).sum()),
           "tune_seconds_per_turn": {"median": float(np.median(waits)), "max": float(np.max(waits))},
           "steps_per_turn": a.steps, "accepted_steps": int(sum(r["accepted"] for r in rows)),
           "rows": rows}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
