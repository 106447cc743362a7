"""`option()`: a dataclass field that also says how it appears on the command line.

Run configs (`TrainConfig`, `EvalConfig`, ...) declare every setting once, with its default and help;
`rwkvjax.cli.flags` turns the fields into argparse flags. Stdlib only, so building the CLI stays light.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

MISSING = dataclasses.MISSING


def option(default: Any = MISSING, *, help: str = "", choices: Sequence | None = None, positional: bool = False,
           metavar: str | None = None, cli: bool = True, default_factory: Any = MISSING) -> Any:
    """A field with CLI metadata. `cli=False` keeps a field off the command line (set by the program)."""
    md = {"help": help, "choices": tuple(choices) if choices is not None else None, "positional": positional,
          "metavar": metavar, "cli": cli}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)
