"""`cli.py traces`: show exactly what training would see from Claude Code sessions (after redaction).

Formats: `text` (rendered training text, sessions one after another; a `### session ...` header per
session goes to stderr so stdout is only training text), `jsonl` (typed events), and `--stats` (counts per
event type, session and project, characters per role, skipped/bad lines, redactions; tokens and merges
through a `token_stats` counter, which the CLI builds from --model).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter, defaultdict
from typing import IO, Protocol

from ingest.errors import InputError
from ingest.events import Event
from ingest.render import SEP, RenderOptions, render_session
from ingest.stream import TraceStream


class TokenCounter(Protocol):
    """What `--stats` asks of a tokenizer-side counter (rwkvjax.merges.stats.TokenStats is one)."""

    def add_span(self, role: str, text: str) -> None: ...

    def add_text(self, text: str) -> None: ...

    def report(self) -> dict: ...


class _Stats:
    def __init__(self, tokens: TokenCounter | None = None):
        self.by_kind: Counter = Counter()
        self.by_session: dict[str, Counter] = defaultdict(Counter)
        self.by_project: Counter = Counter()
        self.chars_by_role: Counter = Counter()
        self.counter = tokens

    def add(self, ev: Event, opts: RenderOptions, first: bool):
        self.by_kind[ev.kind] += 1
        self.by_session[ev.session][ev.kind] += 1
        self.by_project[ev.cwd or "?"] += 1
        if not opts.wants(ev):
            return
        r = render_session([ev], opts)
        if not first:
            self.chars_by_role["boilerplate"] += len(SEP)
            if self.counter is not None:
                self.counter.add_span("boilerplate", SEP)
        for s in r.spans:
            self.chars_by_role[s.role] += s.end - s.start
            if self.counter is not None:
                self.counter.add_span(s.role, r.text[s.start:s.end])
        if self.counter is not None:
            self.counter.add_text(r.text if first else SEP + r.text)

    def report(self, metrics: Counter) -> dict:
        out = {"events": dict(self.by_kind), "sessions": {k: dict(v) for k, v in self.by_session.items()},
               "projects": dict(self.by_project), "chars_by_role": dict(self.chars_by_role),
               "ingest": dict(sorted(metrics.items()))}
        if self.counter is not None:
            out.update(self.counter.report())
        return out


async def _run(stream: TraceStream, fmt: str, stats: _Stats | None, opts: RenderOptions, out: IO[str], err: IO[str]):
    started: set[str] = set()
    async with stream:
        async for ev in stream:
            first = ev.session not in started
            if stats is not None:
                stats.add(ev, opts, first)
                if opts.wants(ev):
                    started.add(ev.session)
                continue
            if fmt == "jsonl":
                out.write(ev.to_json() + "\n")
                continue
            if not opts.wants(ev):
                continue
            if first:
                started.add(ev.session)
                err.write(f"### session {ev.session}" + (f" (subagent of {ev.parent})" if ev.parent else "")
                          + f" cwd={ev.cwd}\n")
                err.flush()
            out.write(("" if first else SEP) + render_session([ev], opts).text)
            out.flush()
        if stats is not None:
            out.write(json.dumps(stats.report(stream.metrics), indent=1, ensure_ascii=False) + "\n")
        elif fmt == "text" and started:
            out.write("\n")


def traces_command(source: list[str], *, fmt: str = "text", stats: bool = False, token_stats: TokenCounter | None = None,
                   reader: str = "auto", opts: RenderOptions = RenderOptions(), projects: str | None = None,
                   out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> None:
    """`source` is ["live"], ["replay"] or transcript paths (.jsonl files or folders)."""
    if fmt not in ("text", "jsonl"):
        raise InputError(f"--format must be text or jsonl, got {fmt!r}")
    if not source:
        raise InputError("--source needs live, replay or transcript paths")
    if source in (["live"], ["replay"]):
        stream = TraceStream(source[0], projects=projects, reader=reader)
    elif "live" in source or "replay" in source:
        raise InputError("--source takes live or replay alone, or only transcript paths")
    else:
        stream = TraceStream("replay", paths=source, reader=reader)
    st = _Stats(token_stats) if stats else None
    asyncio.run(_run(stream, fmt, st, opts, out, err))
