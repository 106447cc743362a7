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


# The WKV-7 implementations a run can ask for (`--wkv-impl`), named here without jax so the CLI can offer
# them as choices; `rwkvjax.model.wkv.WkvImpl` is built from this table, so the two cannot drift apart.
WKV_IMPLS: dict[str, str] = {
    "auto": "the Pallas kernel on a GPU (falling back to chunked where it does not compile), loop_chunked elsewhere",
    "scan": "per-token lax.scan (the reference; stores every state under autodiff)",
    "loop": "per-token loop laid out for XLA:CPU (rwkvjax.model.wkv_loop); stores every state under autodiff",
    "chunked": "exact chunked pure-JAX form, checkpointed per chunk (rwkvjax.model.wkv_chunked)",
    "loop_chunked": "loop when not differentiated, chunked's forward and VJP when differentiated",
    "pallas": "Pallas kernels with a custom VJP (pallas_kernels.wkv7); compiled, GPU only",
    "pallas_interpret": "the same Pallas kernels under interpret=True (slow; runs on CPU)",
}
