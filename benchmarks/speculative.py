"""Speculative decoding from the session memory, and what sampling from the memory's mixture costs.

    PYTHONPATH=. .venv/bin/python benchmarks/speculative.py generate [--model base] [--tokens 200] [--repeats 5]
    PYTHONPATH=. .venv/bin/python benchmarks/speculative.py serve [--model demo] [--streams 1 16] [--tokens 64]

`generate`: tokens/s of `generate_ids` (what `cli.py generate` runs, batch 1, in this process) on three prompts:
- copy: a function of this repository, the request to repeat it with one name changed, and the start of a reply
  that does: its first two lines (the signature and the docstring); "copy, 40 chars": only its first 40
  characters (mid-signature), where the byte-level model's reply leaves the copy after the signature;
- no copy: a question whose answer is nowhere in the context.
Each prompt with the memory a user's state brings (the model's own memory of the first --prime-kb KB of the sample
sessions in ../shared/data/claude-projects, scored by the model as `train` feeds it, so its mixers have learned when
to trust it; cached under the system's temp folder) and with an empty memory (a `base` request), greedy and sampled
(temperature 1, top-p 0.85: `generate`'s defaults). Arms: the model alone (the compiled loop, 16 tokens per
call), the mixture without speculation (K = 0), with K = 3, 7, 15, and K = 7 and 15 re-running the accepted
tokens at once after a rejection instead of feeding them with the next call. Every arm runs once to compile, then
--repeats times, the arms interleaved so load from other processes spreads over all of them; the median is
reported, with the speedup over K = 0 and the drafts accepted, by wall time and by the process's CPU time (tokens
per CPU-second: on a machine other processes share, the work each arm does, whoever else runs). Sampled arms use
the same seed per repeat: speculation draws the same text as K = 0.

`serve`: aggregate tokens/s of `cli.py serve` at each --streams count (clients: benchmarks/serve.py's), with
--no-memory, with the memory and --draft-tokens 0, and with the memory and the default K.

    PYTHONPATH=. .venv/bin/python benchmarks/speculative.py engine [--model demo] [--streams 1 16] [--tokens 64]

`engine`: the same three settings on the server's engine in this process, without HTTP and client processes, the
settings interleaved round by round (what the memory costs per step, with less noise than through the server).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"base": ROOT / "rwkvjax" / "data" / "base_model.safetensors",
          "demo": ROOT / "rwkvjax" / "data" / "demo_model.safetensors"}
SESSIONS = ROOT.parent / "shared" / "data" / "claude-projects"


def prompts() -> dict[str, bytes]:
    src = (ROOT / "rwkvjax" / "serve" / "sampling.py").read_text()
    func = src[src.index("def token_weights"):src.index("def _threshold")].rstrip() + "\n"
    renamed = func.replace("token_weights", "weights_of")
    ask = f"User: Repeat this function, renaming token_weights to weights_of:\n\n{func}\nAssistant: Here it is:\n\n"
    question = "User: What is the capital of France, and why did it become the capital?\n\nAssistant:"
    return {"copy": (ask + "".join(renamed.splitlines(True)[:2])).encode(),  # the reply's first two lines
            "copy, 40 chars": (ask + renamed[:40]).encode(),                  # ... its first 40 characters
            "no copy": question.encode()}


def primed_memory(model_path: Path, config, params, kb: int) -> Path:
    """A memory that has read (scored by this model) the first `kb` KB of the sample sessions' tokens."""
    from rwkvjax.eval.sessions import load_sessions
    from rwkvjax.memory.lm import mixture_bits
    from rwkvjax.memory.memory import MemorySettings, SessionMemory
    from rwkvjax.model.state import zero_state
    from rwkvjax.text.tokenizer import for_vocab
    h = hashlib.sha256(model_path.read_bytes())
    for f in sorted((ROOT / "rwkvjax" / "memory").glob("*.py")):  # a changed memory is primed again
        h.update(f.read_bytes())
    key = h.hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / "rwkvjax-bench" / f"speculative-{key}-{kb}kb.memory.safetensors"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    mem = SessionMemory(MemorySettings.for_vocab(config.vocab_size))
    budget, t0 = kb * 1024, time.perf_counter()
    for s in load_sessions(str(SESSIONS), for_vocab(config.vocab_size)):
        toks = s.tokens[:budget]
        if len(toks):
            mixture_bits(params, config, toks, zero_state(config, 1), mem)
            budget -= len(toks)
    print(json.dumps({"primed_memory": str(path), "tokens": kb * 1024 - budget,
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    mem.save(path)
    return path


def bench_generate(a) -> None:
    import rwkvjax
    from rwkvjax.memory.memory import MemorySettings, SessionMemory
    from rwkvjax.model.params import unstack_layers
    from rwkvjax.serve.generate import generate_ids
    from rwkvjax.serve.sampling import token_weights
    path = MODELS[a.model]
    loaded = rwkvjax.load(path)
    config, params = loaded.arch, loaded.params
    dec = unstack_layers(params)
    weights = token_weights(loaded.tokenizer.decode_bytes, config.vocab_size)
    memfile = primed_memory(path, config, params, a.prime_kb)
    memories = {"user": lambda: SessionMemory.load(memfile, private_copy=True),
                "empty": lambda: SessionMemory(MemorySettings.for_vocab(config.vocab_size))}
    arms = {"model alone": dict(memory=False), "K=0": dict(draft_tokens=0), "K=3": dict(draft_tokens=3),
            "K=7": dict(draft_tokens=7), "K=15": dict(draft_tokens=15),
            "K=7 rerun": dict(draft_tokens=7, recover="rerun"), "K=15 rerun": dict(draft_tokens=15, recover="rerun")}
    sampling = {"greedy": dict(temperature=0.0), "sampled": dict(temperature=1.0, top_p=0.85)}

    def run(prompt, mem, samp, arm, seed):
        kw = dict(arm)
        use_memory = kw.pop("memory", True)
        stats: dict = {}
        t0, c0 = time.perf_counter(), time.process_time()
        out = list(generate_ids(dec, config, list(prompt), max_tokens=a.tokens, seed=seed, weights=weights,
                                stop_ids=(), memory=memories[mem]() if use_memory else None, stats=stats,
                                **sampling[samp], **kw))
        stats["cpu_s"] = time.process_time() - c0
        return time.perf_counter() - t0, out, stats

    arms = {k: v for k, v in arms.items() if not a.arms or k in a.arms or k == "K=0"}
    for pname, prompt in prompts().items():
        if a.prompts and pname not in a.prompts:
            continue
        for mem in a.memories:
            for samp in sampling:
                for arm in arms.values():  # compile every shape first
                    run(prompt, mem, samp, arm, 0)
                rows = {name: [] for name in arms}
                for rep in range(a.repeats):
                    for name, arm in arms.items():
                        rows[name].append(run(prompt, mem, samp, arm, rep))
                base = statistics.median(len(o) / s for s, o, _ in rows["K=0"])
                base_cpu = statistics.median(len(o) / st["cpu_s"] for _, o, st in rows["K=0"])
                for name, rs in rows.items():
                    tps = statistics.median(len(o) / s for s, o, _ in rs)
                    cpu = statistics.median(len(o) / st["cpu_s"] for _, o, st in rs)
                    drafted = sum(st.get("drafted", 0) for _, _, st in rs)
                    accepted = sum(st.get("accepted", 0) for _, _, st in rs)
                    same = all(o == r0[1] for (_, o, _), r0 in zip(rs, rows["K=0"]))
                    print(json.dumps({"model": a.model, "prompt": pname, "memory": mem, "sampling": samp, "arm": name,
                                      "tokens": a.tokens, "tokens_per_s": round(tps, 1),
                                      "vs_K0": round(tps / base, 2),
                                      "tokens_per_cpu_s": round(cpu, 1), "cpu_vs_K0": round(cpu / base_cpu, 2),
                                      "accepted": f"{accepted}/{drafted}" if drafted else None,
                                      "same_text_as_K0": same,
                                      "text": bytes(rs[0][1][:80]).decode(errors="replace")}), flush=True)


def bench_serve(a) -> None:
    import asyncio
    import importlib.util
    spec = importlib.util.spec_from_file_location("serve_bench", ROOT / "benchmarks" / "serve.py")
    sb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sb)  # its clients: streaming AsyncOpenAI, one prompt per stream, temperature 1
    variants = {"--no-memory": ["--no-memory"], "memory, K=0": ["--draft-tokens", "0"], "memory, default K": []}
    batch = ["--max-batch", str(max(a.streams)), "--max-waiting", str(4 * max(a.streams))]
    for name, argv in variants.items():
        url, proc = sb.serve_process(MODELS[a.model], *argv, *batch)
        try:
            for s in a.streams:
                asyncio.run(sb._case(url, s, 2, a.case_timeout))  # warm the path
                runs = [asyncio.run(sb._case(url, s, a.tokens, a.case_timeout)) for _ in range(a.repeats)]
                tps = statistics.median(r["aggregate_tokens_per_s"] for r in runs)
                print(json.dumps({"model": a.model, "server": name, "streams": s, "tokens_per_stream": a.tokens,
                                  "aggregate_tokens_per_s": round(tps, 1),
                                  "runs": [round(r["aggregate_tokens_per_s"], 1) for r in runs]}), flush=True)
        finally:
            proc.terminate()
            proc.wait(60)


def bench_engine(a) -> None:
    """The server's engine in this process (no HTTP): rounds of `streams` requests of --tokens tokens each
    (`base`: an empty memory, temperature 1, a seed per stream), memory off, on with K = 0 and on with the
    default K, interleaved round by round; median tokens/s and tokens per CPU-second."""
    import rwkvjax
    from rwkvjax.memory.memory import MemorySettings, SessionMemory
    from rwkvjax.model.params import unstack_layers
    from rwkvjax.model.state import zero_state
    from rwkvjax.serve.config import DEFAULT_DRAFT_TOKENS
    from rwkvjax.serve.engine import Engine, Request, Sampling
    loaded = rwkvjax.load(MODELS[a.model])
    config, params = loaded.arch, loaded.params
    dec, tok = unstack_layers(params), loaded.tokenizer
    engines = {"--no-memory": Engine(dec, config, tok, max_batch=max(a.streams)),
               "memory, K=0": Engine(dec, config, tok, max_batch=max(a.streams), memory=True),
               f"memory, K={DEFAULT_DRAFT_TOKENS}": Engine(dec, config, tok, max_batch=max(a.streams), memory=True,
                                                          draft_tokens=DEFAULT_DRAFT_TOKENS)}
    for e in engines.values():
        e.warmup()

    def run(e, streams, tokens):
        reqs = []
        for i in range(streams):
            prompt = tok.encode(f"request {i}: def f(x):\n")
            mem = None
            if e.memory:
                mem = SessionMemory(MemorySettings.for_vocab(config.vocab_size))
                mem.absorb(prompt)
            reqs.append(Request(prompt, zero_state(config, 1), "base", Sampling(max_tokens=tokens, seed=i),
                                lambda kind, payload: None, memory=mem, draft_tokens=e.draft_tokens))
        for r in reqs:
            e.submit(r)
        t0, c0 = time.perf_counter(), time.process_time()
        while e._running or e._prefilling or e._waiting.qsize():  # the engine's loop, in this thread
            e._admit()
            e._prefill_one()
            e._decode()
        n = sum(len(r.generated) for r in reqs)
        return n / (time.perf_counter() - t0), n / (time.process_time() - c0)

    for streams in a.streams:
        for e in engines.values():
            run(e, streams, 4)
        res = {name: [] for name in engines}
        for _ in range(a.repeats):
            for name, e in engines.items():
                res[name].append(run(e, streams, a.tokens))
        base = statistics.median(r[0] for r in res["--no-memory"])
        for name, rs in res.items():
            tps = statistics.median(r[0] for r in rs)
            print(json.dumps({"model": a.model, "engine": name, "streams": streams, "tokens_per_stream": a.tokens,
                              "tokens_per_s": round(tps, 1), "vs_no_memory": round(tps / base, 2),
                              "tokens_per_cpu_s": round(statistics.median(r[1] for r in rs), 1),
                              "speculation": engines[name].stats()["speculation"]}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--model", default="base", choices=tuple(MODELS))
    g.add_argument("--tokens", type=int, default=200)
    g.add_argument("--repeats", type=int, default=5)
    g.add_argument("--prime-kb", type=int, default=300)
    g.add_argument("--prompts", nargs="*", help="only these prompts (default: all)")
    g.add_argument("--memories", nargs="+", default=["user", "empty"], choices=("user", "empty"))
    g.add_argument("--arms", nargs="*", help="only these arms (default: all; K=0 is always run, the reference)")
    s = sub.add_parser("serve")
    s.add_argument("--model", default="demo", choices=tuple(MODELS))
    s.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    s.add_argument("--tokens", type=int, default=64)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--case-timeout", type=float, default=900)
    e = sub.add_parser("engine")
    e.add_argument("--model", default="demo", choices=tuple(MODELS))
    e.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    e.add_argument("--tokens", type=int, default=64)
    e.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    {"generate": bench_generate, "serve": bench_serve, "engine": bench_engine}[a.what](a)


if __name__ == "__main__":
    main()
