"""Redaction benchmark: false positives on text that holds no secrets, and throughput.

    PYTHONPATH=. .venv/bin/python benchmarks/redaction.py [--rev GIT_REV] [--repeats 3] [--show 40]

Corpus (the same as benchmarks/ingestion.py --fp): this repo's top-level-package Python files, the ccsniff
bridge, ccsniff's JS sources, package-lock.json, and every text, tool input (JSON-encoded) and tool output of
the real transcripts in ../shared/data/claude-projects (already scrubbed by their exporter: every redaction
there is a false positive, unless it hits one of the exporter's own markers, which no rule touches).

`--rev` loads ingest/redact.py as it was at a git revision (e.g. the commit before a change), so the before
and after figures come from the same script on the same text. `--show N` prints N changed lines (before ->
after) to judge them by eye. Throughput: every text redacted one at a time (as ingestion does), best of
`--repeats`; also a secret-dense synthetic text (a .env file with 30% secret-named lines), on which it also
counts the secret values that were not entirely removed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIXTURE = REPO.parent / "shared" / "data" / "claude-projects"

from benchmarks.ingestion import transcript_texts  # noqa: E402  (the same texts as the ingestion benchmark)


def load_redactor(rev: str | None):
    if rev is None:
        from ingest.redact import Redactor
        return Redactor
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:ingest/redact.py"], capture_output=True,
                         text=True, check=True).stdout
    mod = types.ModuleType(f"redact_{rev}")
    sys.modules[mod.__name__] = mod  # dataclasses look the module up while building the class
    exec(compile(src, f"{rev}:ingest/redact.py", "exec"), mod.__dict__)
    return mod.Redactor


def code_texts() -> list[str]:
    paths = (sorted(REPO.glob("*/*.py")) + sorted(REPO.glob("ingest/bridge/*.mjs"))
             + sorted((REPO / "node_modules" / "ccsniff" / "src").glob("*.js")) + [REPO / "package-lock.json"])
    return [p.read_text(encoding="utf-8") for p in paths]


def dense_env(n_lines: int = 20000, seed: int = 0) -> str:
    """A synthetic .env-style file: 30% secret-named assignments with punctuation-rich values (any printable
    character but a space), 70% ordinary assignments."""
    rng = random.Random(seed)
    printable = "".join(chr(c) for c in range(33, 127))
    names = ["SECRET_KEY", "SMTP_PASS", "AUTH_SECRET", "DB_PASSWORD", "GITHUB_TOKEN", "api_key"]
    plain = ["DEBUG=true", "PORT=8080", "HOST=localhost", "LOG_LEVEL=info", "WORKERS=4", "REGION=eu-west-1", "TZ=UTC"]
    lines = []
    for _ in range(n_lines):
        if rng.random() < 0.3:
            value = "".join(rng.choice(printable) for _ in range(rng.randint(8, 40)))
            lines.append(f"{rng.choice(names)}={value.lstrip(chr(34) + chr(39))}")  # a leading quote would quote it
        else:
            lines.append(rng.choice(plain))
    return "\n".join(lines)


def leaks(Redactor, text: str) -> dict:
    """Secret lines of a dense_env text whose value is not entirely gone (a 4-character piece of it is left),
    and ordinary lines that did not survive verbatim."""
    out = Redactor()(text).split("\n")
    leaked = changed = sensitive = 0
    for before, after in zip(text.split("\n"), out):
        name, value = before.split("=", 1)
        if name in ("DEBUG", "PORT", "HOST", "LOG_LEVEL", "WORKERS", "REGION", "TZ"):
            changed += before != after
            continue
        sensitive += 1
        rest = after[len(name) + 1:]
        leaked += any(value[i:i + 4] in rest for i in range(max(1, len(value) - 3)))
    return {"sensitive_lines": sensitive, "leaked": leaked, "ordinary_lines_changed": changed}


def false_positives(Redactor, texts: list[str], show: int) -> dict:
    red = Redactor()
    changed, shown = 0, []
    for t in texts:
        out = red(t)
        if out != t:
            changed += 1
            if len(shown) < show:
                a, b = t.splitlines(), out.splitlines()
                for line in difflib.unified_diff(a, b, lineterm="", n=0):
                    if line[:1] in "+-" and not line.startswith(("+++", "---")) and len(shown) < show:
                        shown.append(line[:200])
    return {"texts": len(texts), "MB": round(sum(map(len, texts)) / 1e6, 3), "texts_changed": changed,
            "redactions": sum(red.counts.values()), "by_rule": dict(red.counts), "changed_lines": shown}


def throughput(Redactor, texts: list[str], repeats: int) -> dict:
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    best = float("inf")
    for _ in range(repeats):
        red = Redactor()
        t0 = time.perf_counter()
        for t in texts:
            red(t)
        best = min(best, time.perf_counter() - t0)
    return {"MB": round(mb, 3), "best_s": round(best, 3), "MBps": round(mb / best, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", help="git revision whose ingest/redact.py to measure (default: the working tree)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--show", type=int, default=0, help="print up to N changed lines of the false-positive corpus")
    a = ap.parse_args()
    Redactor = load_redactor(a.rev)
    tx, code = transcript_texts(), code_texts()
    out = {"rev": a.rev or "working tree",
           "false_positives_transcripts": false_positives(Redactor, tx, a.show),
           "false_positives_code": false_positives(Redactor, code, a.show),
           "throughput_transcripts": throughput(Redactor, tx, a.repeats),
           "throughput_code": throughput(Redactor, code, a.repeats),
           "throughput_dense_env": throughput(Redactor, [dense_env()], a.repeats),
           "leaks_dense_env": leaks(Redactor, dense_env())}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
