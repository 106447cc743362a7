"""rwkvjax command line: parse arguments, call the library. Run `python cli.py -h`."""

from __future__ import annotations

import argparse
import json
import sys


def _convert(sub):
    p = sub.add_parser("convert", help="convert a checkpoint (HF repo/folder, .safetensors, .pth, rwkv.cpp .bin) "
                                       "to one safetensors file")
    p.add_argument("src")
    p.add_argument("out", help="output .safetensors path")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])

    def run(a):
        from rwkvjax.convert import convert
        print(json.dumps(convert(a.src, a.out, a.dtype), indent=1))
    p.set_defaults(run=run)


def _generate(sub):
    p = sub.add_parser("generate", help="stream sampled text from a model (optionally with a tuned state)")
    p.add_argument("--model", required=True, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.85)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])

    def run(a):
        from rwkvjax.cli_commands import generate_command
        generate_command(a)
    p.set_defaults(run=run)


def _traces(sub):
    p = sub.add_parser("traces", help="show what training would see from Claude Code sessions (after redaction)")
    p.add_argument("--source", nargs="+", required=True, metavar="live|replay|PATH",
                   help="live (history, then follow appends), replay (history), or .jsonl files/folders")
    p.add_argument("--format", default="text", choices=["text", "jsonl"])
    p.add_argument("--stats", action="store_true", help="counts per event type, session and project instead")
    p.add_argument("--model", help="with --stats: also count tokens with this model's tokenizer")
    p.add_argument("--projects-dir", help="Claude Code projects folder (default $CLAUDE_PROJECTS_DIR or ~/.claude/projects)")
    p.add_argument("--reader", default="auto", choices=["auto", "ccsniff", "python"],
                   help="explicit paths are replayed by the Python reader unless ccsniff is forced")
    p.add_argument("--no-thinking", action="store_true")
    p.add_argument("--meta", action="store_true", help="include isMeta user lines")
    p.add_argument("--system", action="store_true", help="include system lines")
    p.add_argument("--no-subagents", action="store_true")
    p.add_argument("--max-tool-output", type=int, default=16384, help="characters kept per tool output (0: all)")

    def run(a):
        from ingest.render import RenderOptions
        from ingest.traces import traces_command
        opts = RenderOptions(include_thinking=not a.no_thinking, include_meta=a.meta, include_system=a.system,
                             include_subagents=not a.no_subagents, max_tool_output=a.max_tool_output)
        traces_command(a.source, fmt=a.format, stats=a.stats, model=a.model, reader=a.reader, opts=opts,
                       projects=a.projects_dir)
    p.set_defaults(run=run)


COMMANDS = [_convert, _generate, _traces]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    from rwkvjax.errors import user_errors
    with user_errors():
        args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
