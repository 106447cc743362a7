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
    p.add_argument("--checkpoint", default=None,
                   help="a --ckpt-dir of `train`: start from its tuned state (S0) instead of zeros")

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


def _train(sub):
    from rwkvjax.cli_args import add_dataclass_args
    from rwkvjax.run_config import TrainConfig
    p = sub.add_parser("train", help="state-tune a frozen model on Claude Code sessions (resumes from --ckpt-dir)")
    p.add_argument("--source", nargs="+", default=["live"],
                   help="live (history, then follow new lines), replay (history, then stop), or .jsonl files/folders")
    p.add_argument("--ckpt-dir", default=None, help="checkpoint directory (required unless --demo)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=1000, help="total steps for this checkpoint directory")
    steps.add_argument("--forever", action="store_true", help="train until interrupted (Ctrl-C saves and exits)")
    p.add_argument("--demo", action="store_true", help="one-minute offline demo: shipped tiny model + sample traces")
    add_dataclass_args(p, TrainConfig, skip=("ckpt_dir", "source", "steps"),
                       help={"replay_per_step": "replay windows per step", "lr": "S0 peak learning rate",
                             "merges": "dynamic merges + hypernetwork",
                             "hypernet": "with --merges: start from this `cli.py hypernet` file",
                             "wkv_impl": "auto|scan|chunked|pallas"})

    def run(a):
        from rwkvjax.cli_commands import train_command
        train_command(a)
    p.set_defaults(run=run)


def _inspect(sub):
    p = sub.add_parser("inspect", help="what a training checkpoint learned")
    p.add_argument("--checkpoint", required=True, help="the --ckpt-dir of a training run")
    p.add_argument("--last", type=int, default=20, help="steps in the recent window of the curve")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", default=None, help="write the loss / bits-per-byte / compression curves to this PNG")

    def run(a):
        from rwkvjax.cli_commands import inspect_command
        inspect_command(a)
    p.set_defaults(run=run)


def _merge_stats(sub):
    p = sub.add_parser("merge-stats", help="dynamic-merge statistics of a training checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--top", type=int, default=25)

    def run(a):
        from rwkvjax.report import merge_stats
        print(json.dumps(merge_stats(a.checkpoint, a.top), indent=1, ensure_ascii=False))
    p.set_defaults(run=run)


def _pretrain(sub):
    from rwkvjax.cli_args import add_dataclass_args
    from rwkvjax.run_config import PretrainConfig
    p = sub.add_parser("pretrain", help="train all weights of an RWKV-7 from scratch on text files (resumable)")
    p.add_argument("--corpus", nargs="+", required=True, help="text files or folders (never your trace data)")
    p.add_argument("--out", required=True, help="output folder: checkpoints, metrics.jsonl, model.safetensors")
    add_dataclass_args(p, PretrainConfig, skip=("out", "corpus"), help={"vocab": "byte | world"})

    def run(a):
        from rwkvjax.cli_args import dataclass_from_args
        from rwkvjax.pretrain import pretrain
        from rwkvjax.run_config import PretrainConfig
        print(json.dumps(pretrain(dataclass_from_args(PretrainConfig, a, corpus=tuple(a.corpus)))))
    p.set_defaults(run=run)


def _score(sub):
    p = sub.add_parser("score", help="bits per byte of text files under a model (optionally with a tuned state)")
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", default=None, help="a --ckpt-dir of `train`: use its tuned S0")
    p.add_argument("files", nargs="+")

    def run(a):
        from rwkvjax.cli_commands import score_command
        score_command(a)
    p.set_defaults(run=run)


def _eval(sub):
    p = sub.add_parser("eval", help="prequential evaluation of state-tuning arms on a folder of sessions")
    p.add_argument("--traces", required=True, help="folder of Claude Code transcripts")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="report folder (REPORT.md, prequential.png, summary.json)")
    p.add_argument("--k", type=int, default=3, help="every k-th session by start time is held out")
    p.add_argument("--ctx-len", type=int, default=512)
    p.add_argument("--live-per-step", type=int, default=2)
    p.add_argument("--replay-per-step", type=int, default=2)
    p.add_argument("--max-windows-per-session", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--lr-final", type=float, default=0.01)
    p.add_argument("--hyper-lr", type=float, default=1e-3)
    p.add_argument("--hypernet", default=None, help="the merges arm starts from this trained hypernetwork "
                                                    "(`cli.py hypernet`); default: untrained")
    p.add_argument("--arms", nargs="+", default=["frozen", "carry", "tuned", "tuned_replay",
                                                 "tuned_replay_reducible", "merges"])
    p.add_argument("--canaries", nargs="*", default=None, help="canary text files (default: stdlib textwrap.py "
                                                               "and the Python licence)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=10_000)

    def run(a):
        from rwkvjax.cli_commands import eval_command
        eval_command(a)
    p.set_defaults(run=run)


def _hypernet(sub):
    from rwkvjax.cli_args import add_dataclass_args
    from rwkvjax.hyper_train import HyperTrainConfig
    p = sub.add_parser("hypernet", help="train the merge hypernetwork offline on a folder of sessions and measure "
                                        "strict bits/byte and speed with and without merges on held-out sessions")
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", nargs="*", default=(), help="train on these text files/folders instead of the "
                                                           "training sessions (held-out sessions are still scored)")
    add_dataclass_args(p, HyperTrainConfig, skip=("corpus",), help={
        "traces": "folder of Claude Code transcripts", "out": "output .safetensors file",
        "k": "every k-th session by start time is held out", "ctx_len": "units per training window",
        "speed_steps": "training steps timed per arm for the speed comparison"})

    def run(a):
        from rwkvjax.cli_commands import hypernet_command
        hypernet_command(a)
    p.set_defaults(run=run)


COMMANDS = [_convert, _generate, _traces, _train, _inspect, _merge_stats, _pretrain, _score, _eval, _hypernet]


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
