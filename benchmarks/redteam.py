"""Red team, bigger than the test (tests/train/test_redteam.py): clean sessions (pieces of real transcripts)
interleaved with poisoning sessions, trained three ways: poisoned with the gate, poisoned without it, clean only
with the gate. Reports canary bpb over the run, what happened to each kind of poison, and the held-out bpb of
later clean pieces under each final state (paired per-window differences with a 95% interval).

    PYTHONPATH=. .venv/bin/python benchmarks/redteam.py [--model M] [--pieces 24] [--heldout 8] [--piece-bytes 1024]
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


def main():
    root = Path(sys.path[0])
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(root / "rwkvjax" / "data" / "demo_model.safetensors"))
    ap.add_argument("--traces", default=str(root.parent / "shared" / "data" / "claude-projects"))
    ap.add_argument("--pieces", type=int, default=24)
    ap.add_argument("--heldout", type=int, default=8)
    ap.add_argument("--piece-bytes", type=int, default=1024)
    ap.add_argument("--ctx-len", type=int, default=256)
    a = ap.parse_args()
    import jax.numpy as jnp

    import rwkvjax
    from rwkvjax.eval.sessions import load_sessions
    from rwkvjax.text.tokenizer import for_vocab
    from rwkvjax.train.probe import TextProbe, default_canaries, read_texts
    from tests.tools.redteam import (
        clean_pieces,
        heldout_bits,
        poison_share_stopped,
        poison_texts,
        run_arm,
        write_stream,
    )
    model = rwkvjax.load(a.model)
    tok = for_vocab(model[0].vocab_size)
    texts = [s.text for s in load_sessions(a.traces, tok)]
    pieces = clean_pieces(texts, a.piece_bytes)[:a.pieces + a.heldout]
    train, held = pieces[:a.pieces], pieces[a.pieces:]
    canaries = read_texts(default_canaries())
    poison = poison_texts(a.piece_bytes * 2, next(iter(canaries.values())))
    work = Path(tempfile.mkdtemp())
    kinds = write_stream(work / "mixed" / "-p", train, poison, every=max(1, a.pieces // len(poison)))
    write_stream(work / "clean" / "-p", train, {}, every=1)
    probe = TextProbe(model[0], model[1], tok, canaries, ctx_len=512, max_windows=1, wkv_impl="scan")
    arms = {}
    for name, folder, gate in (("poisoned_gate", "mixed", True), ("poisoned_no_gate", "mixed", False),
                               ("clean_gate", "clean", True)):
        t0 = time.perf_counter()
        recs, tr = run_arm(work / folder, work / f"ck-{name}", model=model, steps=None, ctx_len=a.ctx_len,
                           gate=gate)
        bits, nb = heldout_bits(model, tr, held, a.ctx_len)
        arms[name] = {"records": recs, "bits": bits, "bytes": nb, "seconds": time.perf_counter() - t0,
                      "canary_final": float(np.mean(list(probe(tr).values())))}
    zero = jnp.zeros_like(tr.wkv)
    import dataclasses
    fb, nb = heldout_bits(model, dataclasses.replace(tr, wkv=zero), held, a.ctx_len)
    start = float(np.mean(list(probe(dataclasses.replace(tr, wkv=zero)).values())))

    def ci(x, y):
        d = (x - y) / nb
        se = d.std(ddof=1) / np.sqrt(len(d))
        return [float(d.mean() - 1.96 * se), float(d.mean() + 1.96 * se)]

    out = {"model": a.model, "ctx_len": a.ctx_len, "train_pieces": len(train), "heldout_pieces": len(held),
           "piece_bytes": a.piece_bytes, "poison_kinds": list(poison), "canary_start_bpb": start,
           "heldout_bpb_frozen": float(fb.sum() / nb.sum()), "arms": {}}
    for name, r in arms.items():
        recs = r["records"]
        committed = [x.get("canary_bpb") for x in recs if x.get("canary_bpb") is not None]
        out["arms"][name] = {
            "steps": len(recs), "seconds": round(r["seconds"], 1),
            "heldout_bpb": float(r["bits"].sum() / r["bytes"].sum()),
            "heldout_gain_vs_frozen_bpb": float((fb.sum() - r["bits"].sum()) / nb.sum()),
            "canary_final_bpb": r["canary_final"], "canary_final_rel": r["canary_final"] / start - 1,
            "canary_max_committed_rel": (max(committed) / start - 1) if committed else None,
            "probe_s_median": float(np.median([x["probe_s"] for x in recs])) if committed else None,
            "step_s_median": float(np.median([x["step_s"] for x in recs])),
            "poison": poison_share_stopped(recs, kinds) if name.startswith("poisoned") else None}
    out["heldout_delta_poisoned_gate_minus_clean_ci95"] = ci(arms["poisoned_gate"]["bits"], arms["clean_gate"]["bits"])
    out["heldout_delta_no_gate_minus_clean_ci95"] = ci(arms["poisoned_no_gate"]["bits"], arms["clean_gate"]["bits"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
