"""The ingestion package's user-facing error (it imports nothing from rwkvjax; the CLI reports it as one line)."""

from __future__ import annotations


class InputError(ValueError):
    """A transcript source, path or option given to ingestion cannot be used."""


class MissingInput(InputError, FileNotFoundError):
    """A transcript file, folder or required tool (node, ccsniff) is missing."""
