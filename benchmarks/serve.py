"""Server throughput and latency on 127.0.0.1: aggregate tokens/s, time to first token and inter-token latency
at several numbers of concurrent streams, and the prefix cache on turn 2 of a long chat.

    PYTHONPATH=. .venv/bin/python benchmarks/serve.py [--model demo|0.1B] [--streams 1 4 16 64] [--tokens 64]

The server is `python cli.py serve` in its own process on a free loopback port (as a user runs it); clients
are asyncio tasks of the official `openai` client (AsyncOpenAI) reading the SSE stream in this process. Every run is bounded: each stream asks for --tokens tokens, the whole case for
at most --case-timeout seconds. One JSON line per case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])


def serve_process(model_path: str, *argv: str, **kw):
    """`cli.py serve` in its own process on a free loopback port, with `argv` and `--key=value` flags from `kw`;
    (url, process) once /health answers."""
    import subprocess
    import urllib.request
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    flags = [*argv, *(f"--{k.replace('_', '-')}={v}" for k, v in kw.items())]
    proc = subprocess.Popen([sys.executable, "cli.py", "serve", "--model", str(model_path), "--port", str(port), *flags],
                            cwd=sys.path[0], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 900
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=5)
            return url, proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the server exited during start-up")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


async def _stream(client, body) -> dict:
    t0 = time.perf_counter()
    stamps = []
    async for ch in await client.completions.create(**body):
        if ch.choices and ch.choices[0].text:
            stamps.append(time.perf_counter())
    n = len(stamps)
    return {"ttft": stamps[0] - t0 if stamps else None, "gaps": [b - a for a, b in zip(stamps, stamps[1:])],
            "pieces": n, "seconds": time.perf_counter() - t0}


async def _case(url, streams: int, tokens: int, timeout: float) -> dict:
    import openai
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600) as client:
        bodies = [{"model": "base", "prompt": f"request {i}: def f(x):\n", "max_tokens": tokens, "stream": True,
                   "temperature": 1.0, "seed": i} for i in range(streams)]
        t0 = time.perf_counter()
        res = await asyncio.wait_for(asyncio.gather(*[_stream(client, b) for b in bodies]), timeout)
        wall = time.perf_counter() - t0
    pieces = sum(r["pieces"] for r in res)
    ttft = sorted(r["ttft"] for r in res if r["ttft"] is not None)
    gaps = sorted(g for r in res for g in r["gaps"])
    q = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None
    return {"streams": streams, "tokens_per_stream": tokens, "aggregate_tokens_per_s": pieces / wall,
            "ttft_p50_s": q(ttft, 0.5), "ttft_p99_s": q(ttft, 0.99), "itl_p50_s": q(gaps, 0.5),
            "itl_p99_s": q(gaps, 0.99), "wall_s": wall}


async def _chat_turn2(url, history_tokens: int) -> dict:
    """TTFT of turn 2 of a chat whose turn 1 was ~history_tokens long: first with the cache warm from turn 1,
    then (a fresh server state key) without."""
    import openai
    words = " ".join(f"w{i}" for i in range(history_tokens // 4))
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=900) as client:
        async def ask(msgs, model="base"):
            t0 = time.perf_counter()
            r = await client.chat.completions.create(model=model, messages=msgs, max_tokens=1, temperature=0)
            return time.perf_counter() - t0, r.model_dump()
        turn1 = [{"role": "user", "content": words}]
        _, a = await ask(turn1)
        turn2 = turn1 + [{"role": "assistant", "content": a["choices"][0]["message"]["content"]},
                         {"role": "user", "content": "and then?"}]
        warm, b = await ask(turn2)
        cold_msgs = [{"role": "user", "content": "x" + words}] + turn2[1:]  # same length, nothing cached
        cold, c = await ask(cold_msgs)
    return {"history_tokens": b["usage"]["prompt_tokens"], "turn2_ttft_cached_s": warm,
            "cached_tokens": b["usage"]["prompt_tokens_details"]["cached_tokens"], "turn2_ttft_uncached_s": cold,
            "uncached_cached_tokens": c["usage"]["prompt_tokens_details"]["cached_tokens"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo", choices=("demo", "0.1B"))
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--history", type=int, default=4096)
    ap.add_argument("--case-timeout", type=float, default=900)
    a = ap.parse_args()
    import tempfile
    root = Path(sys.path[0])
    if a.model == "demo":
        path = str(root / "rwkvjax" / "data" / "demo_model.safetensors")
    else:  # random weights of the 0.1B shape
        import rwkvjax
        from rwkvjax.io.convert import save_official
        from rwkvjax.model.init import init_params
        cfg = rwkvjax.PRESETS["0.1B"]
        path = str(Path(tempfile.mkdtemp()) / "random-0.1B.safetensors")
        save_official(init_params(cfg, 0), cfg, path, "fp32")
    url, proc = serve_process(path, max_batch=max(a.streams), max_waiting=4 * max(a.streams))
    try:
        for s in a.streams:
            asyncio.run(_case(url, s, 2, a.case_timeout))  # the server compiled its shapes at start; warm the path
            r = asyncio.run(_case(url, s, a.tokens, a.case_timeout))
            print(json.dumps({"model": a.model, **r}), flush=True)
        print(json.dumps({"model": a.model, **asyncio.run(_chat_turn2(url, a.history))}), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
