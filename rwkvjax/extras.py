"""Optional dependencies (pyproject's extras): checked before a command starts its work, so a missing one is a
one-line error instead of a traceback after minutes of computing."""

from __future__ import annotations

import importlib

from rwkvjax.errors import ConfigError


class MissingExtra(ConfigError):
    """An optional dependency a flag or command needs is not installed."""


def require(module: str, extra: str, needed_for: str) -> None:
    """Import `module` or raise `MissingExtra` naming the extra that installs it and what needs it."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{needed_for} needs {module}: install the `{extra}` extra: "
                           f"pip install -e '.[{extra}]'") from None
