"""Argparse flags generated from a run-config dataclass: one source of names, defaults, help and choices.

Field types: int, float, str, bool (--x / --no-x; `bool | None`: neither given = None, "auto"), `T | None` (flag
optional), tuple[str, ...] (one or
more values). Metadata from `rwkvjax.options.option`: help, choices, positional, metavar, cli.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _base(kind):
    """(scalar type, is a tuple) of a field type such as `int`, `str | None` or `tuple[str, ...]`."""
    args = [t for t in typing.get_args(kind) if t is not type(None)]
    if typing.get_origin(kind) is tuple:
        return args[0], True
    if args and typing.get_origin(kind) is not tuple:
        inner = args[0]
        if typing.get_origin(inner) is tuple:
            return typing.get_args(inner)[0], True
        return inner, False
    return kind, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls, *, skip=()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        md = f.metadata
        if f.name in skip or not md.get("cli", True):
            continue
        kind, many = _base(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        doc = md.get("help", "").replace("%", "%%")
        kw: dict = {"help": doc}
        if md.get("choices"):
            kw["choices"] = md["choices"]
        if md.get("metavar"):
            kw["metavar"] = md["metavar"]
        if md.get("positional"):
            if many:
                kw["nargs"] = "+" if required else "*"
            if not required:
                kw.setdefault("nargs", "?")
                kw["default"] = default
            parser.add_argument(f.name, type=kind, **kw)
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool and not many:
            word = "on" if default else "off" if default is not None else "auto"
            kw["help"] = f"{doc} (default: {word})".lstrip()
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kw)
            continue
        if many:
            kw["nargs"] = "+" if required or default else "*"
        if required:
            kw["help"] = f"{doc} (required)".lstrip()
            parser.add_argument(flag, type=kind, required=True, **kw)
        else:
            shown = " ".join(map(str, default)) if many and default else default
            shown = "none" if shown in (None, "", ()) else str(shown).replace("%", "%%")
            kw["help"] = f"{doc} (default: {shown})".lstrip()
            parser.add_argument(flag, type=kind, default=default, **kw)


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    """The config from parsed flags (lists become tuples), with `overrides` applied."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}
    kw.update(overrides)
    return cls(**kw)


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """`--progress-every SECONDS`: a long command's progress line interval off a terminal (on one it shows a bar)."""
    parser.add_argument("--progress-every", type=float, default=None, metavar="SECONDS",
                        help="off a terminal, write a progress line (with an ETA) every SECONDS; 0: none (default: "
                             "$RWKVJAX_PROGRESS_EVERY, else 30; on a terminal a progress bar is shown instead)")


def apply_progress_flag(args: argparse.Namespace) -> None:
    """Make `--progress-every` the interval of this process's progress lines (`rwkvjax.train.progress`)."""
    seconds = getattr(args, "progress_every", None)
    if seconds is None:
        return
    from rwkvjax.errors import ConfigError
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"--progress-every {seconds}: expected a number of seconds >= 0 (0: no progress lines)")
    from rwkvjax.train.progress import set_every_s
    set_every_s(seconds)
