"""Memory of `serve --ttt` over many conversations: the process's resident memory and what the tuner holds,
every N conversations, while the server's own tuner (`serve.ttt.ConversationTuner`) tunes one new conversation
after another (each a two-turn exchange, its state written to a state store, as the server does).

    PYTHONPATH=. .venv/bin/python benchmarks/ttt_memory.py [--conversations 500] [--every 50] [--model M]

Flat means: after the first conversations have compiled everything, RSS grows by no more than the allocator's
noise, and the tuner's per-conversation structures stay at their bounds (`GateSettings.remember_states`,
`TTTSettings.log_turns`, nothing pending).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main():
    root = Path(sys.path[0])
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(root / "rwkvjax" / "data" / "demo_model.safetensors"))
    ap.add_argument("--conversations", type=int, default=500)
    ap.add_argument("--every", type=int, default=50)
    a = ap.parse_args()

    import rwkvjax
    from rwkvjax.io.states import StateStore
    from rwkvjax.serve.ttt import ConversationTuner, TTTSettings
    model = rwkvjax.load(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        tuner = ConversationTuner(model.arch, model.params, model.tokenizer, StateStore(Path(tmp) / "states"),
                                  base_hash=model.hash, tokenizer_id=model.tokenizer_id,
                                  settings=TTTSettings(steps=1, ctx_len=64, windows=1))
        print("| conversations | RSS (MB) | gate: remembered gradients / canary figures | turn log | pending | "
              "s per conversation |")
        print("|---|---|---|---|---|---|")
        t0 = time.perf_counter()
        try:
            for i in range(1, a.conversations + 1):
                text = (f"User: what does job {i} do?\n\nAssistant: it runs `make test-{i % 7}` and writes "
                        f"build/{i}.log\n\n")
                tuner.submit(f"conv/base/c{i}", None, text)
                tuner.wait(f"conv/base/c{i}")
                if i == 1 or i % a.every == 0:
                    print(f"| {i} | {rss_mb():.0f} | {len(tuner.gate._grads)} / {len(tuner.gate._last)} | "
                          f"{len(tuner.log)} | {len(tuner.pending)} | {(time.perf_counter() - t0) / i:.2f} |",
                          flush=True)
        finally:
            tuner.stop()


if __name__ == "__main__":
    main()
