"""Training checkpoints through orbax: trainables, optimizer state and all host-side state, per step.

Step directories are written atomically (orbax commits a step only when complete), the last N kept.
Host state (tokenizer, replay buffer, ingestion cursor, RNG, counters, metrics history, base-model hash)
travels as JSON in the same step so it always matches the arrays.

Damage is expected (a disk that filled up, a copy cut short, a step folder emptied by hand): readers take
the newest step that reads back whole, with one warning line naming the damaged ones, and a resuming
writer moves those aside (`<step>.damaged`, never deleted). A save that fails (a full disk) raises
`SaveFailed` with one line at once, instead of training on with nothing saved. (The copies orbax's own threads
print of that failure are silenced by the CLI, `rwkvjax.cli.quiet_orbax_reports`, not here: importing this module
changes no process-wide logging or hook.)
"""

from __future__ import annotations

import abc
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Callable, TypeVar

import jax
import orbax.checkpoint as ocp

from rwkvjax.errors import CheckpointError, MissingFile, UserError

log = logging.getLogger(__name__)
T = TypeVar("T")


PRIVATE_ITEMS = ("host", "memory")  # items that hold the user's text


class SaveFailed(CheckpointError):
    """A checkpoint step could not be written (the earlier steps are intact)."""


# What reading a damaged step raises (a file cut short, a missing item, an emptied folder): tensorstore reports
# unreadable data as ValueError (and a torn host file is a JSONDecodeError, also one), orbax a missing item as
# KeyError, the OS a missing file as OSError. Anything else (a TypeError, an AttributeError) is a bug in the reader
# and propagates instead of being reported as damage.
DAMAGE_ERRORS = (OSError, ValueError, KeyError)
# What a save that cannot be written raises: the OS's OSError (a full disk, no permission), tensorstore's ValueError
# (RESOURCE_EXHAUSTED and the like). A host that is not JSON (TypeError) is a bug and propagates.
SAVE_ERRORS = (OSError, ValueError)


def _root_cause(e: BaseException) -> str:
    """The innermost error's first line (an OSError's strerror when there is one), for a one-line report."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    code = re.search(r"os_error_code='(\d+)'", str(e))  # tensorstore's wording of an OS error
    if code:
        return os.strerror(int(code.group(1)))
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return first if len(first) < 240 else first[:240] + "..."


def checkpoint_manager(directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
                       create: bool = True) -> ocp.CheckpointManager:
    """The one orbax manager: the newest `keep` steps preserved, async saves, atomic step folders.

    `create=False` is for readers: a missing folder is an error instead of a new empty one.
    """
    directory = Path(directory).absolute()
    if not create and not directory.is_dir():
        raise MissingFile(f"{directory}: no such checkpoint folder")
    opts = ocp.CheckpointManagerOptions(preservation_policy=ocp.checkpoint_managers.LatestN(keep),
                                        enable_async_checkpointing=async_save, create=create)
    return ocp.CheckpointManager(directory, options=opts)


def abstract(tree):
    """Shapes and dtypes of `tree`, the template orbax restores into."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class StatePart(abc.ABC):
    """One part of a run's state (the learner, the ingestion cursor, the gate, the session memories, ...), which
    saves and restores itself in a checkpoint step: entries of the step's host JSON (top-level keys, the names
    steps have always used) and orbax array items. A part without arrays keeps the defaults."""

    def checkpoint_host(self) -> dict:
        """Its entries of the step's host JSON."""
        return {}

    def checkpoint_arrays(self) -> dict:
        """Its array items, {item name: array tree}."""
        return {}

    def arrays_like(self, host: dict) -> dict:
        """Templates of the array items a step with this host JSON holds for it (none: nothing to read)."""
        return {}

    def check_checkpoint(self, host: dict) -> None:
        """Raise (a `UserError`) when the step cannot be resumed by this run (another model, other settings)."""
        return None

    @abc.abstractmethod
    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        """Take the state the step holds (`arrays`: the items `arrays_like` named, read back)."""


class RunState:
    """The parts of a run's state, each registered once under a name; the checkpointer walks them in
    registration order to save a step (`TrainCheckpointer.save_state`) and to read one back (`read_state`),
    and they restore in that order (a later part may build on an earlier one)."""

    def __init__(self):
        self.parts: dict[str, StatePart] = {}

    def register(self, name: str, part: StatePart) -> StatePart:
        if name in self.parts:
            raise ValueError(f"run state: a part named {name!r} is registered already")
        self.parts[name] = part
        return part

    def host(self) -> dict:
        out: dict = {}
        for name, part in self.parts.items():
            entries = part.checkpoint_host()
            clash = set(entries) & set(out)
            if clash:
                raise ValueError(f"run state: part {name!r} writes host entries {sorted(clash)} another part wrote")
            out.update(entries)
        return out

    def arrays(self) -> dict:
        out: dict = {}
        for name, part in self.parts.items():
            items = part.checkpoint_arrays()
            clash = set(items) & set(out)
            if clash:
                raise ValueError(f"run state: part {name!r} saves items {sorted(clash)} another part saved")
            out.update(items)
        return out

    def restore(self, host: dict, arrays: dict[str, dict]) -> None:
        """Every part from what `TrainCheckpointer.read_state` read (its arrays by part name)."""
        for name, part in self.parts.items():
            part.restore_checkpoint(host, arrays[name])


class TrainCheckpointer:
    """Steps of a training run: items `trainable`, `opt_state` (arrays) and `host` (JSON)."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        self.directory = Path(directory).absolute()
        self._mngr = checkpoint_manager(self.directory, keep=keep, async_save=async_save and not read_only,
                                        create=not read_only)
        self._failed = False

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def newest_intact(self, read: Callable[[int], T], *, set_aside: bool = False) -> tuple[int, T] | None:
        """(step, read(step)) for the newest step that `read` takes without error; None without steps.

        A step that fails to read is damaged: one warning names them all; with `set_aside` (a writer that
        resumes) their folders are renamed `<step>.damaged`, so the steps are written afresh. An error the
        user must act on (`UserError`: another base model, other settings) is raised, not skipped.
        """
        damaged: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                out = read(step)
            except UserError:
                raise
            except DAMAGE_ERRORS as e:
                damaged.append((step, _root_cause(e)))
                continue
            if damaged:
                self._report_damage(damaged, step, set_aside)
            return step, out
        if damaged:
            raise CheckpointError(f"{self.directory}: every checkpoint step is damaged ("
                                  + "; ".join(f"step {s}: {why}" for s, why in damaged)
                                  + "); move the folder away to start afresh")
        return None

    def _report_damage(self, damaged: list[tuple[int, str]], used: int, set_aside: bool) -> None:
        moved = ""
        if set_aside:
            for s, _ in damaged:
                src = self.directory / str(s)
                dst = src.with_name(f"{s}.damaged")
                n = 1
                while dst.exists():
                    dst, n = src.with_name(f"{s}.damaged{n}"), n + 1
                src.rename(dst)
            self._mngr.reload()
            moved = " (moved aside as <step>.damaged)"
        log.warning("%s: damaged checkpoint step%s %s%s; using step %d", self.directory,
                    "s" if len(damaged) > 1 else "", ", ".join(f"{s} ({why})" for s, why in damaged), moved, used)

    def save_state(self, step: int, state: RunState) -> None:
        """Every registered part of the run's state, as one step."""
        self.save_items(step, state.arrays(), state.host())

    def read_state(self, step: int, state: RunState) -> tuple[dict, dict[str, dict]]:
        """(host JSON, {part name: its array items}) of `step`, after every part checked that it can resume it.
        Nothing is restored yet: a damaged step raises here, before any part took anything from it."""
        host = self._host(step)
        for part in state.parts.values():
            part.check_checkpoint(host)
        likes = {name: part.arrays_like(host) for name, part in state.parts.items()}
        flat = {k: v for like in likes.values() for k, v in like.items()}
        read = self.restore_extra(step, flat) if flat else {}
        return host, {name: {k: read[k] for k in like} for name, like in likes.items()}

    def save_items(self, step: int, items: dict, host: dict) -> None:
        """Array trees `items` ({item name: tree}; `trainable` and `opt_state` are what readers look for) and the
        JSON `host`, as one step. Waits for the step to be committed, so a failure (a full disk) stops the run at
        this step."""
        more = {k: ocp.args.StandardSave(v) for k, v in items.items()}
        self._check_space(step)
        # Owner-only from the first byte: the host state and the session memory hold the user's (redacted) text,
        # and a chmod after the write would leave them readable by others until it ran (or forever after a kill).
        # The umask is the process's, so it is set only for the save, which this thread waits for.
        mask = os.umask(0o077)
        try:
            self._mngr.save(step, args=ocp.args.Composite(host=ocp.args.JsonSave(host), **more))
            self._mngr.wait_until_finished()
        except SAVE_ERRORS as e:
            self._failed = True
            last = [s for s in self.all_steps() if s != step]
            for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)  # give the space back; the step is not there
            raise SaveFailed(f"{self.directory}: saving step {step} failed ({_root_cause(e)}); "
                             + (f"the newest saved step is {max(last)}" if last else "no step is saved")
                             + "; fix the cause and run the same command again to resume") from None
        finally:
            os.umask(mask)

    def _check_space(self, step: int) -> None:
        """Refuse a save the disk cannot hold (1.5x the newest step's size) before orbax's writers start:
        their failures arrive from many threads at once."""
        steps = self.all_steps()
        if not steps:
            return
        newest = self.directory / str(max(steps))
        need = int(1.5 * sum(f.stat().st_size for f in newest.rglob("*") if f.is_file())) + (64 << 10)
        free = shutil.disk_usage(self.directory).free
        if free < need:
            self._failed = True
            raise SaveFailed(f"{self.directory}: saving step {step} failed (No space left on device: {free:,} bytes "
                             f"free, a step needs about {need:,}); the newest saved step is {max(steps)}; fix the "
                             "cause and run the same command again to resume")

    def restore_extra(self, step: int, likes: dict) -> dict:
        out = self._mngr.restore(step, args=ocp.args.Composite(
            **{k: ocp.args.StandardRestore(abstract(v)) for k, v in likes.items()}))
        return {k: out[k] for k in likes}

    def restore(self, step: int, trainable_like, opt_like):
        out = self._mngr.restore(step, args=ocp.args.Composite(
            trainable=ocp.args.StandardRestore(abstract(trainable_like)),
            opt_state=ocp.args.StandardRestore(abstract(opt_like)), host=ocp.args.JsonRestore()))
        return out.trainable, out.opt_state, out.host

    def _newest(self, read: Callable[[int], T]) -> tuple[int, T]:
        found = self.newest_intact(read)
        if found is None:
            raise MissingFile(f"{self.directory}: no checkpoint found (is this a --ckpt-dir of `train`?)")
        return found

    def _host(self, step: int) -> dict:
        return self._mngr.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore())).host

    def _trainable_arrays(self, step: int):
        return self._mngr.restore(step, args=ocp.args.Composite(trainable=ocp.args.StandardRestore())).trainable

    def restore_host(self, step: int | None = None) -> dict:
        """Only the JSON part (for `inspect` and `merge-stats`, no model needed); the newest intact step's
        by default."""
        return self._host(step) if step is not None else self._newest(self._host)[1]

    def restore_trainable_arrays(self, step: int | None = None):
        """The trainable arrays as saved (a nested dict), without knowing their structure in advance; the
        newest intact step's by default."""
        return self._trainable_arrays(step) if step is not None else self._newest(self._trainable_arrays)[1]

    def restore_newest_host_and_arrays(self) -> tuple[int, dict, dict]:
        """(step, host, trainable arrays) of the newest step where both read back whole (`inspect`)."""
        step, (host, tr) = self._newest(lambda s: (self._host(s), self._trainable_arrays(s)))
        return step, host, tr

    def wait(self) -> None:
        self._mngr.wait_until_finished()
        # host state and session memories hold trace text (already redacted): owner-only, also in steps that an
        # older version wrote
        for item in PRIVATE_ITEMS:
            for f in self.directory.glob(f"*/{item}/**/*"):
                f.chmod(0o600 if f.is_file() else 0o700)

    def close(self) -> None:
        if self._mngr is None:
            return
        if self._failed:  # its background writers failed: closing it would only report that again, from threads
            self._mngr = None
            return
        self.wait()
        self._mngr.close()
        self._mngr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
