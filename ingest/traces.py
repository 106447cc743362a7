"""`cli.py traces`: show exactly what training would see from Claude Code sessions (after redaction).

Formats: `text` (rendered training text, sessions one after another; a `### session ...` header per
session goes to stderr so stdout is only training text), `jsonl` (typed events), and `--stats` (counts per
event type, session and project, characters per role, skipped/bad lines, redactions; tokens with --model).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter, defaultdict
from typing import IO

from ingest.events import Event
from ingest.render import SEP, RenderOptions, render_session
from ingest.stream import TraceStream


def _tokenizer(model: str):
    """Tokenizer of the model's vocabulary (rwkvjax.tokenizer.for_vocab); loads the model to learn it."""
    import rwkvjax
    from rwkvjax.tokenizer import for_vocab
    cfg, _ = rwkvjax.load(model)
    return for_vocab(cfg.vocab_size)


class _Stats:
    def __init__(self, tokenizer=None):
        self.by_kind: Counter = Counter()
        self.by_session: dict[str, Counter] = defaultdict(Counter)
        self.by_project: Counter = Counter()
        self.chars_by_role: Counter = Counter()
        self.tokens_by_role: Counter = Counter()
        self.tok = tokenizer
        self.dyntok = None
        if tokenizer is not None:  # what the trainer's default dynamic merges would do to this text
            from ingest.dyntok import DynamicTokenizer, DynTokSettings, digit_protected
            V = tokenizer.vocab_size
            self.dyntok = DynamicTokenizer(DynTokSettings(v_base=V, protected=digit_protected(tokenizer.decode_bytes, V)),
                                           tokenizer.decode_bytes)

    def add(self, ev: Event, opts: RenderOptions, first: bool):
        self.by_kind[ev.kind] += 1
        self.by_session[ev.session][ev.kind] += 1
        self.by_project[ev.cwd or "?"] += 1
        if not opts.wants(ev):
            return
        r = render_session([ev], opts)
        if not first:
            self.chars_by_role["boilerplate"] += len(SEP)
            if self.tok is not None:
                self.tokens_by_role["boilerplate"] += len(self.tok.encode(SEP))
        for s in r.spans:
            self.chars_by_role[s.role] += s.end - s.start
            if self.tok is not None:
                self.tokens_by_role[s.role] += len(self.tok.encode(r.text[s.start:s.end]))
        if self.dyntok is not None:
            self.dyntok.encode(self.tok.encode(r.text if first else SEP + r.text))

    def report(self, metrics: Counter) -> dict:
        out = {"events": dict(self.by_kind), "sessions": {k: dict(v) for k, v in self.by_session.items()},
               "projects": dict(self.by_project), "chars_by_role": dict(self.chars_by_role),
               "ingest": dict(sorted(metrics.items()))}
        if self.tok is not None:
            out["tokens_by_role"] = dict(self.tokens_by_role)
            st = self.dyntok.stats(top=10)
            out["merges"] = {"base_tokens": st["base_tokens"], "recurrent_steps": st["recurrent_steps"],
                             "steps_per_base_token": st["steps_per_base_token"],
                             "fewer_steps": 1 - st["steps_per_base_token"], "promotions": st["promotions"],
                             "evictions": st["evictions"], "top_merges": st["top_merges"]}
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


def traces_command(source: list[str], *, fmt: str = "text", stats: bool = False, model: str | None = None,
                   reader: str = "auto", opts: RenderOptions = RenderOptions(), projects: str | None = None,
                   out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> None:
    """`source` is ["live"], ["replay"] or transcript paths (.jsonl files or folders)."""
    if fmt not in ("text", "jsonl"):
        raise ValueError(f"--format must be text or jsonl, got {fmt!r}")
    if not source:
        raise ValueError("--source needs live, replay or transcript paths")
    if source in (["live"], ["replay"]):
        stream = TraceStream(source[0], projects=projects, reader=reader)
    elif "live" in source or "replay" in source:
        raise ValueError("--source takes live or replay alone, or only transcript paths")
    else:
        stream = TraceStream("replay", paths=source, reader=reader)
    st = _Stats(_tokenizer(model) if model else None) if stats else None
    asyncio.run(_run(stream, fmt, st, opts, out, err))
