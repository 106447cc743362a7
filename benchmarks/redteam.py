"""Red team, bigger than the test (tests/train/test_redteam.py), in two parts.

`training`: clean sessions (pieces of real transcripts) interleaved with poisoning sessions (those of
benchmarks/common/redteam.py, plus a file re-read 50 times), trained three ways: poisoned with the gate, poisoned
without it, clean only with the gate. Reports canary bpb over the run (the model's, and the mixture's with a copy of the
session memory), what happened to each kind of poison, and the held-out bpb of later clean pieces under each final
state, alone and mixed with a copy of the final memory (paired per-window differences with a 95% interval).

`flood`: the session memory alone (the frozen model's opinion, each 512-byte window read from the zero start state
as `train` reads it) learns clean history, then a flood, then is scored on the clean text that follows. A flood
must not take over the memory: held-out bits/byte after each flood against no flood, with the flood learned as it
is, through the update gate's screen (64 recent windows), and through the gate's screen and the memory's own flood
screen (what `train` does).

    PYTHONPATH=. .venv/bin/python benchmarks/redteam.py [--part all|training|flood] [--model M] [--pieces 24]
        [--heldout 8] [--piece-bytes 1024] [--history-bytes 300000] [--flood-heldout-bytes 60000]
"""

from __future__ import annotations

import argparse
import dataclasses
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
    ap.add_argument("--part", choices=("all", "training", "flood"), default="all")
    ap.add_argument("--model", default=str(root / "rwkvjax" / "data" / "demo_model.safetensors"))
    ap.add_argument("--traces", default=str(root.parent / "shared" / "data" / "claude-projects"))
    ap.add_argument("--pieces", type=int, default=24)
    ap.add_argument("--heldout", type=int, default=8)
    ap.add_argument("--piece-bytes", type=int, default=1024)
    ap.add_argument("--ctx-len", type=int, default=256)
    ap.add_argument("--reread-bytes", type=int, default=4096, help="training part: the file read 50 times")
    ap.add_argument("--history-bytes", type=int, default=300_000, help="flood part: clean text learned first")
    ap.add_argument("--flood-heldout-bytes", type=int, default=60_000, help="flood part: clean text scored after")
    a = ap.parse_args()
    import rwkvjax
    from rwkvjax.eval.sessions import load_sessions
    model = rwkvjax.load(a.model)
    tok = model.tokenizer
    texts = [s.text for s in load_sessions(a.traces, tok)]
    out = {"model": a.model, "date": time.strftime("%Y-%m-%d")}
    if a.part in ("all", "training"):
        out["training"] = training(a, model, tok, texts)
        print(json.dumps({"training": out["training"]}, indent=1), flush=True)
    if a.part in ("all", "flood"):
        out["flood"] = flood(a, model, texts)
    print(json.dumps(out, indent=1))


def _ci(x, y, nb):
    d = (x - y) / nb
    se = d.std(ddof=1) / np.sqrt(len(d))
    return [float(d.mean() - 1.96 * se), float(d.mean() + 1.96 * se)]


def heldout_mixture_bits(model, trainable, memory, texts: list[str], ctx_len: int):
    """Per-window mixture bits of held-out texts: each window read from the start state by the model (as
    training reads it), mixed with a copy of `memory` that reads the texts in order (scored, then learned)."""
    from rwkvjax.train.data import stream_windows
    from rwkvjax.train.session_memory import window_paths
    config, params = model.arch, model.params
    tok = model.tokenizer
    mem = memory.copy()
    bits, nbytes = [], []
    for i, t in enumerate(texts):
        for w in stream_windows(f"h{i}", tok.encode(t), ctx_len, tok):
            ids = np.asarray(w.units, np.int64)
            (st, b), = window_paths(params, config, trainable, [ids], rows=1, length=ctx_len,
                                    nbits=mem.settings.nbits)
            bits.append(float(mem.score(st, b, ids).sum()))
            nbytes.append(w.nbytes)
    return np.asarray(bits), np.asarray(nbytes, np.float64)


def training(a, model, tok, texts) -> dict:
    import sysconfig

    import jax.numpy as jnp

    from benchmarks.common.redteam import (
        clean_pieces,
        heldout_bits,
        poison_share_stopped,
        poison_texts,
        run_arm,
        write_stream,
    )
    from benchmarks.common.sessions import write_session
    from rwkvjax.train.probe import TextProbe, default_canaries, read_texts
    from rwkvjax.train.session_memory import checkpoint_memory
    pieces = clean_pieces(texts, a.piece_bytes)[:a.pieces + a.heldout]
    train, held = pieces[:a.pieces], pieces[a.pieces:]
    canaries = read_texts(default_canaries())
    poison = poison_texts(a.piece_bytes * 2, next(iter(canaries.values())))
    work = Path(tempfile.mkdtemp())
    kinds = write_stream(work / "mixed" / "-p", train, poison, every=max(1, a.pieces // len(poison)))
    # a file read again and again: 50 sessions reading the same file (a tool output is cut at --max-tool-output,
    # so one session cannot hold the 50 reads), after everything else: right before the held-out text
    std = Path(sysconfig.get_paths()["stdlib"])
    reread = (std / "argparse.py").read_text()[10_000:10_000 + a.reread_bytes]
    for k in range(50):
        sid = f"s{len(kinds):04d}-file_reread_x50"
        write_session(work / "mixed" / "-p", reread, start=f"2026-01-01T01:{k:02d}:00Z", sid=sid)
        kinds[sid] = "file_reread_x50"
    write_stream(work / "clean" / "-p", train, {}, every=1)
    probe = TextProbe(model.arch, model.params, tok, canaries, ctx_len=512, max_windows=1, wkv_impl="scan")
    arms = {}
    for name, folder, gate in (("poisoned_gate", "mixed", True), ("poisoned_no_gate", "mixed", False),
                               ("clean_gate", "clean", True)):
        t0 = time.perf_counter()
        ck = work / f"ck-{name}"
        recs, tr = run_arm(work / folder, ck, model=model, steps=None, ctx_len=a.ctx_len, gate=gate)
        bits, nb = heldout_bits(model, tr, held, a.ctx_len)
        mem = checkpoint_memory(ck)
        mix, _ = heldout_mixture_bits(model, tr, mem, held, a.ctx_len)
        arms[name] = {"records": recs, "bits": bits, "mix": mix, "bytes": nb, "seconds": time.perf_counter() - t0,
                      "canary_final": float(np.mean(list(probe(tr).values()))), "memory": mem.stats()}
    zero = jnp.zeros_like(tr.wkv)
    fb, nb = heldout_bits(model, dataclasses.replace(tr, wkv=zero), held, a.ctx_len)
    start = float(np.mean(list(probe(dataclasses.replace(tr, wkv=zero)).values())))

    out = {"ctx_len": a.ctx_len, "train_pieces": len(train), "heldout_pieces": len(held),
           "piece_bytes": a.piece_bytes, "poison_kinds": list(poison) + ["file_reread_x50"],
           "reread_bytes": a.reread_bytes, "canary_start_bpb": start,
           "heldout_bpb_frozen": float(fb.sum() / nb.sum()), "arms": {}}
    for name, r in arms.items():
        recs = r["records"]
        committed = [x.get("canary_bpb") for x in recs if x.get("canary_bpb") is not None]
        mix_committed = [x["canary_mix_bpb"] for x in recs if x.get("canary_mix_bpb") is not None]
        mix_probed = [x["probed_canary_mix_bpb"] for x in recs if x.get("probed_canary_mix_bpb") is not None]
        mix_start = next((x["canary_mix_start_bpb"] for x in recs if x.get("canary_mix_start_bpb")), None)
        out["arms"][name] = {
            "steps": len(recs), "seconds": round(r["seconds"], 1),
            "heldout_bpb": float(r["bits"].sum() / r["bytes"].sum()),
            "heldout_gain_vs_frozen_bpb": float((fb.sum() - r["bits"].sum()) / nb.sum()),
            "heldout_mixture_bpb": float(r["mix"].sum() / r["bytes"].sum()),
            "memory": r["memory"],
            "memory_screened_windows": sum(len(x.get("memory_screened") or []) for x in recs),
            "canary_final_bpb": r["canary_final"], "canary_final_rel": r["canary_final"] / start - 1,
            "canary_max_committed_rel": (max(committed) / start - 1) if committed else None,
            # the mixture with a copy of the memory: against its own start, and against the model's start (the
            # gate's bound), and how much it moves from one step to the next
            "canary_mix_start_bpb": mix_start,
            "canary_mix_max_committed_rel": (max(mix_committed) / mix_start - 1) if mix_committed else None,
            "canary_mix_max_committed_vs_model_start": (max(mix_committed) / start - 1) if mix_committed else None,
            "canary_mix_step_change_sd_rel": float(np.std(np.diff(mix_probed)) / mix_start) if mix_committed else None,
            "memory_learning_undone": sum(x.get("memory_gate") == "rolled_back" for x in recs),
            "probe_s_median": float(np.median([x["probe_s"] for x in recs])) if committed else None,
            "step_s_median": float(np.median([x["step_s"] for x in recs])),
            "memory_s_median": float(np.median([x["memory_s"] for x in recs])),
            "poison": poison_share_stopped(recs, kinds) if name.startswith("poisoned") else None}
    out["heldout_delta_poisoned_gate_minus_clean_ci95"] = _ci(arms["poisoned_gate"]["bits"],
                                                              arms["clean_gate"]["bits"], nb)
    out["heldout_delta_no_gate_minus_clean_ci95"] = _ci(arms["poisoned_no_gate"]["bits"], arms["clean_gate"]["bits"],
                                                        nb)
    out["heldout_mixture_delta_poisoned_gate_minus_clean_ci95"] = _ci(arms["poisoned_gate"]["mix"],
                                                                      arms["clean_gate"]["mix"], nb)
    out["heldout_mixture_delta_no_gate_minus_clean_ci95"] = _ci(arms["poisoned_no_gate"]["mix"],
                                                                arms["clean_gate"]["mix"], nb)
    return out


def flood(a, model, texts) -> dict:
    """The session memory after a flood, against no flood, on the clean text that follows (see the module doc)."""
    import pathlib
    import sysconfig

    from rwkvjax.memory.memory import MemorySettings, SessionMemory
    from rwkvjax.train.gate import RedundancyScreen
    from rwkvjax.train.session_memory import FloodScreen, window_paths
    from rwkvjax.train.trainable import init_trainable
    config, params = model.arch, model.params
    ctx = 512  # train's default --ctx-len
    tr = init_trainable(config)
    allb = "".join(texts).encode()
    history, heldout = allb[:a.history_bytes], allb[a.history_bytes:a.history_bytes + a.flood_heldout_bytes]
    std = pathlib.Path(sysconfig.get_paths()["stdlib"])
    line = b"ERROR: connection reset by peer (retrying)\n"
    # files cut to whole windows, so a re-read repeats the same windows and the model's opinion is computed once
    # per distinct window (the memory and the screens see every repeat)
    floods = {"one line x4000": line * 4000,
              "6 KB of the history re-read x50": history[-6144:] * 50,
              "60 KB new file (argparse.py) x50": (std / "argparse.py").read_bytes()[:61440] * 50,
              # the same file read once: what learning its text costs the held-out figure, flood or not
              "60 KB new file (argparse.py) x1": (std / "argparse.py").read_bytes()[:61440]}
    cache: dict[bytes, tuple] = {}

    def paths(ws):
        todo = [w for w in dict.fromkeys(w.tobytes() for w in ws) if w not in cache]
        for i in range(0, len(todo), 16):
            chunk = [np.frombuffer(b, np.int64) for b in todo[i:i + 16]]
            for b, p in zip(todo[i:i + 16], window_paths(params, config, tr, chunk, rows=16, length=ctx, nbits=8)):
                cache[b] = p
        return [cache[w.tobytes()] for w in ws]

    def windows(b: bytes):
        u = np.frombuffer(b, np.uint8).astype(np.int64)
        return [u[i:i + ctx] for i in range(0, len(u), ctx)]

    def feed(mem, b, screens=()):
        ws = windows(b)
        bits = nbytes = skipped = 0
        for w, (st, lm) in zip(ws, paths(ws)):
            if any([s.check(w) is not None for s in screens]):  # every screen sees every window, as in train
                skipped += 1
                continue
            bits += float(mem.score(st, lm, w).sum())
            nbytes += len(w)
        return bits, nbytes, skipped

    settings = MemorySettings.for_vocab(256)
    out = {"ctx_len": ctx, "history_bytes": len(history), "heldout_bytes": len(heldout),
           "memory_mb": settings.memory_mb, "heldout_bpb_no_flood": {}, "arms": {}}
    t0 = time.perf_counter()
    arms = ("learned as it is", "gate screen", "gate screen + memory flood screen")

    def screens(arm):
        out = [] if arm == "learned as it is" else [RedundancyScreen(32, 0.9, 64)]
        return out + ([FloodScreen.for_memory(settings)] if arm.endswith("memory flood screen") else [])

    clean = {}
    for arm in arms:  # the same history through the same screens, no flood: each arm's own reference
        mem, sc = SessionMemory(settings), screens(arm)
        feed(mem, history, sc)
        clean[arm] = feed(mem, heldout)[0]  # the held-out text is clean: learned as it is in every arm
        out["heldout_bpb_no_flood"][arm] = clean[arm] / len(heldout)
    for name, fl in floods.items():
        row = out["arms"][name] = {"flood_bytes": len(fl)}
        for arm in arms:
            mem, sc = SessionMemory(settings), screens(arm)
            feed(mem, history, sc)
            _, _, skipped = feed(mem, fl, sc)
            bits, nb, _ = feed(mem, heldout)
            row[arm] = {"heldout_bpb": bits / nb, "vs_no_flood": bits / clean[arm] - 1,
                        "flood_windows_skipped": skipped, "flood_windows": len(windows(fl))}
            print(json.dumps({name: {arm: row[arm]}}), flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


if __name__ == "__main__":
    main()
