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


COMMANDS = [_convert, _generate]


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
