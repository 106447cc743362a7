"""User-facing errors: what the user gave (a file, a flag, a model for a state) cannot be used.

Only these become a one-line `error: ...` and exit status 2 in the CLI; any other exception is a bug
and keeps its traceback. Each class also derives from the builtin a caller would expect
(`ValueError`, `FileNotFoundError`, ...), so library users can catch either.
`ingest` is a leaf package with its own base, `ingest.errors.InputError`; the CLI treats it the same.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class: the message names the file, flag or setting, and says what to do."""


class ConfigError(UserError, ValueError):
    """A setting or flag value is invalid."""


class DataError(UserError, ValueError):
    """Input data (sessions, corpus or text files, saved state) cannot be used."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file cannot be turned into RWKV-7 parameters."""


class CheckpointMismatch(UserError, ValueError):
    """A training checkpoint cannot be resumed or used with the given model or settings."""


class HubError(UserError, RuntimeError):
    """A model could not be fetched from (or found in the cache of) the Hugging Face Hub."""


class VocabError(UserError, ValueError):
    """A tokenizer vocabulary file is malformed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's handler. It derives from `KeyboardInterrupt` so every
    command's Ctrl-C path (save what it has, then stop) also runs on SIGTERM; the CLI exits 143 for it, 130
    for Ctrl-C."""


class CannotWrite(UserError, OSError):
    """A file could not be written for a reason the user can fix (a full disk, a file-size limit, a read-only or
    foreign folder). It is still an `OSError`, with the original `errno` and `filename`, for callers that catch
    those; nothing was left under the final name or beside it."""


class DiskFull(CannotWrite):
    """No space left on the device (or the user's quota, or the file-size limit) for a file being written."""
