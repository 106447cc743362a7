"""`cli.py traces`: the rendered, redacted training text (or typed events, or statistics) of sessions."""

from __future__ import annotations

from rwkvjax.cli.flags import add_dataclass_args, dataclass_from_args
from rwkvjax.train.config import TracesConfig


def add_arguments(p):
    add_dataclass_args(p, TracesConfig)


def run(args) -> None:
    from ingest.render import RenderOptions
    from ingest.traces import traces_command
    cfg = dataclass_from_args(TracesConfig, args)
    opts = RenderOptions(include_thinking=cfg.thinking, include_meta=cfg.meta, include_system=cfg.system,
                         include_subagents=cfg.subagents, max_tool_output=cfg.max_tool_output)
    tokens = None
    if cfg.stats and cfg.model:
        from rwkvjax.io.formats import load
        from rwkvjax.merges.stats import TokenStats
        tokens = TokenStats(load(cfg.model).tokenizer)
    traces_command(list(cfg.source), fmt=cfg.format, stats=cfg.stats, token_stats=tokens, reader=cfg.reader,
                   opts=opts, projects=cfg.projects_dir)
