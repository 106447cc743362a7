"""`cli.py traces`: jsonl, text and stats outputs over a real transcript."""

from __future__ import annotations

import io
import json

import pytest

import rwkvjax
from ingest.render import RenderOptions
from ingest.traces import traces_command
from rwkvjax.merges.stats import TokenStats
from rwkvjax.text.tokenizer import for_vocab
from tests.conftest import CLAUDE_PROJECTS, RWKVCPP_DIR

AGENT = CLAUDE_PROJECTS / "-Users-yoav-projects-alignment-hive" / "agent-a78d046.jsonl"


def _run(**kw):
    out, err = io.StringIO(), io.StringIO()
    traces_command([str(AGENT)], out=out, err=err, **kw)
    return out.getvalue(), err.getvalue()


def test_jsonl_and_text_agree():
    jl, _ = _run(fmt="jsonl")
    events = [json.loads(x) for x in jl.splitlines()]
    assert events and {e["session"] for e in events} == {"agent-a78d046"}
    text, err = _run(fmt="text", opts=RenderOptions(max_tool_output=0))
    assert err.startswith("### session agent-a78d046 (subagent of ")
    for e in events:
        if e["kind"] == "ToolResult":
            assert e["output"] in text
        if e["kind"] in ("UserText", "AssistantText", "Thinking"):
            assert e["text"] in text


def test_stats_with_byte_model_counts_tokens_per_role():
    model = RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin"
    if not model.is_file():
        raise FileNotFoundError(f"fixture {model} is missing")
    config = rwkvjax.load(model).arch
    out, _ = _run(stats=True, token_stats=TokenStats(for_vocab(config.vocab_size)))
    st = json.loads(out)
    assert st["events"]["ToolUse"] > 0 and st["ingest"]["skipped_line:hive-mind-meta"] == 1
    text = _run(fmt="text")[0][:-1]  # the command ends its output with one newline
    assert sum(st["chars_by_role"].values()) == len(text)
    # byte-level model: tokens per role == UTF-8 bytes per role
    assert sum(st["tokens_by_role"].values()) == len(text.encode())
    assert st["tokens_by_role"]["tool_output"] > st["tokens_by_role"]["user"] > 0
    # dynamic merges over the same token stream: fewer recurrent steps, counted consistently
    m = st["merges"]
    assert m["base_tokens"] == len(text.encode())
    assert 0 < m["recurrent_steps"] < m["base_tokens"] and m["promotions"] > 0
    assert m["steps_per_base_token"] == pytest.approx(m["recurrent_steps"] / m["base_tokens"])


def test_source_errors():
    with pytest.raises(ValueError, match="alone"):
        traces_command(["live", str(AGENT)])
    with pytest.raises(ValueError, match="--format"):
        traces_command([str(AGENT)], fmt="csv")
