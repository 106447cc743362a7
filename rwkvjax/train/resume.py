"""Which settings a run must keep to be continued, and the one error that names the first one changed.

`train` (its checkpoint's `train_config`), `pretrain` (its folder's `recipe.json`) and `eval` (its progress
fingerprint) each hold a `ResumeRule`: the settings they compare, in JSON form (a tuple setting is saved as a
list, so it is compared as one), and the wording of the refusal. Stdlib only: the config modules import it.
"""

from __future__ import annotations

import json

from rwkvjax.errors import CheckpointMismatch


class ResumeRule:
    """`fixed`: the settings that must not change (None: every setting except those in `free`).

    `absent_ok`: a setting the saved run does not record is taken as unchanged (the run was saved before the
    setting existed); otherwise its absence counts as a change. `as_flags`: name a setting as its command-line
    flag (`--ctx-len 16`) rather than as a field (`ctx_len=16`). `saved_as`: how the message names the saved run.
    """

    def __init__(self, *, fixed: tuple[str, ...] | None = None, free: tuple[str, ...] = (), absent_ok: bool = False,
                 as_flags: bool = False, saved_as: str = "the checkpoint's"):
        if fixed is not None and free:
            raise ValueError("ResumeRule: give the fixed settings or the free ones, not both")
        self.fixed, self.free, self.absent_ok = fixed, free, absent_ok
        self.as_flags, self.saved_as = as_flags, saved_as

    def settings(self, settings: dict) -> dict:
        """The settings this rule compares, in the JSON form they are saved in."""
        keys = [k for k in settings if k not in self.free] if self.fixed is None else self.fixed
        return json.loads(json.dumps({k: settings[k] for k in keys}))

    def change(self, saved: dict, now: dict) -> str | None:
        """The first fixed setting of `now` that differs from `saved` (both all of a run's settings), worded for a
        message; None when the run may be continued."""
        for k, v in self.settings(now).items():
            if k not in saved and self.absent_ok:
                continue
            old = json.loads(json.dumps(saved.get(k)))  # as read back from disk, whatever `saved` came from
            if old != v:
                name = f"--{k.replace('_', '-')} {v!r}" if self.as_flags else f"{k}={v!r}"
                return f"setting {name} differs from {self.saved_as} {old!r}"
        return None

    def check(self, saved: dict, now: dict, *, where: str, remedy: str) -> None:
        """Raise `CheckpointMismatch` ("<where>: setting ... differs from ...; <remedy>") on a change."""
        why = self.change(saved, now)
        if why is not None:
            raise CheckpointMismatch(f"{where}: {why}; {remedy}")
