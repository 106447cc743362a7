"""The parts of a `train` run's state that belong to the run itself rather than to one of its components: its
counters, what identifies it (base model, settings), and its learning-rate backoff. The components (learner or project states, live
windows, update gate, session memories) are parts of their own; `train.run.Trainer` registers them all in one
`io.checkpoint.RunState`.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.checkpoint import StatePart
from rwkvjax.model.config import Architecture
from rwkvjax.train.config import TrainConfig
from rwkvjax.train.data import Window
from rwkvjax.train.loop import Hook

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunCounters(StatePart):
    """Steps made, and the base tokens and bytes of the live windows trained on. Host entries `step`,
    `tokens_seen`, `bytes_seen`."""

    step: int = 0
    tokens_seen: int = 0
    bytes_seen: int = 0

    def count(self, step: int, live: list[Window]) -> tuple[int, int]:
        """Step `step` trained on `live`: (its base tokens, its bytes), added to the totals."""
        base, nbytes = sum(w.n_base for w in live), sum(w.nbytes for w in live)
        self.step = step
        self.tokens_seen += base
        self.bytes_seen += nbytes
        return base, nbytes

    def checkpoint_host(self) -> dict:
        return {"step": self.step, "tokens_seen": self.tokens_seen, "bytes_seen": self.bytes_seen}

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        self.step, self.tokens_seen, self.bytes_seen = host["step"], host["tokens_seen"], host["bytes_seen"]


class RunIdentity(StatePart):
    """What a step was trained with: the base model (its path, dimensions and hash) and the settings. A step of
    another base model, or of settings a resumed run must keep, is refused (`check_checkpoint`); nothing is
    taken from it. Host entries `base_hash`, `base_model`, `model_config`, `train_config`, `saved_at`."""

    def __init__(self, cfg: TrainConfig, config: Architecture, base_hash: str):
        self.cfg, self.config, self.base_hash = cfg, config, base_hash

    def checkpoint_host(self) -> dict:
        return {"base_hash": self.base_hash, "base_model": self.cfg.model,
                "model_config": dataclasses.asdict(self.config), "train_config": self.cfg.to_dict(),
                "saved_at": time.time()}

    def check_checkpoint(self, host: dict) -> None:
        cfg = self.cfg
        # first: another --dtype also changes the base-model hash
        TrainConfig.RESUME.check(host["train_config"], cfg.to_dict(), where=str(cfg.ckpt_dir),
                                 remedy="keep it, or start a new --ckpt-dir")
        if host["base_hash"] != self.base_hash:
            raise CheckpointMismatch(
                f"{cfg.ckpt_dir}: checkpoint was trained on a different base model (hash {host['base_hash']}, "
                f"this model {self.base_hash}); use a new --ckpt-dir or the original --model")
        saved = host["train_config"]
        if "memory" in saved:  # (a checkpoint from before the session memory resumes with an empty one)
            if saved["memory"] != cfg.memory:
                had = "--memory" if saved["memory"] else "--no-memory"
                raise CheckpointMismatch(
                    f"{cfg.ckpt_dir}: this run was trained with {had}; resume it with {had}, or start a new "
                    "--ckpt-dir (a memory cannot start in the middle of a run, nor be dropped without losing it)")
            if cfg.memory and saved["memory_mb"] != cfg.memory_mb:
                raise CheckpointMismatch(
                    f"{cfg.ckpt_dir}: setting memory_mb={cfg.memory_mb!r} differs from the checkpoint's "
                    f"{saved['memory_mb']!r} (a memory's tables cannot be resized exactly); resume with --memory-mb "
                    f"{saved['memory_mb']:g}, or start a new --ckpt-dir")

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        """Nothing to take: the step was checked against this run's identity, which it shares."""


class LrBackoff(Hook, StatePart):
    """Backs the learning rate off while the update gate keeps rolling updates back: after every `after`
    rollbacks in a row the learner's update is halved (`Learner.lr_scale`), never below `floor / lr` (the floor
    is a peak learning rate), and after `warn_after` in a row one warning says the run is stalled. An accepted
    update ends the streak; a quarantined one neither ends nor extends it (the window, not the rate, was at fault).
    Without it a run whose every update was refused learned nothing and said nothing (issue 25).

    Each step's record gets `lr_scale`, `lr` (the peak learning rate now), `rollback_streak` and `stalled`;
    `lr_backoff` and `stall_warning` on the steps that backed off or warned. A checkpoint part (host entry
    `lr_backoff`): the scale and the streak are run state, a resumed run continues with them."""

    def __init__(self, learner, *, lr: float, after: int, floor: float, warn_after: int):
        self.learner, self.lr, self.after, self.floor, self.warn_after = learner, lr, after, floor, warn_after
        self.scale = 1.0
        self.streak = 0

    def _apply(self) -> None:
        self.learner.lr_scale = self.scale

    def after_step(self, info) -> None:
        rec = info.record
        decision = rec.get("gate")
        if decision == "accepted":
            self.streak = 0
        elif decision == "rolled_back":
            self.streak += 1
            lowest = min(1.0, self.floor / self.lr)
            if self.after and self.streak % self.after == 0 and self.scale > lowest:
                old = self.scale
                self.scale = max(self.scale / 2, lowest)
                self._apply()
                rec["lr_backoff"] = msg = (
                    f"step {info.step}: {self.streak} updates in a row rolled back; learning rate "
                    f"{self.lr * old:.4g} -> {self.lr * self.scale:.4g} (floor {min(self.floor, self.lr):.4g})")
                log.warning("train: %s", msg)
            if self.streak == self.warn_after:
                rec["stall_warning"] = msg = (
                    f"step {info.step}: the last {self.streak} updates were all rolled back by the update gate: "
                    f"the run is stalled, learning nothing (learning rate now {self.lr * self.scale:.4g}); see "
                    "`cli.py inspect`, or lower --lr / raise --gate-canary-rel")
                log.warning("train: %s", msg)
        rec.update(lr_scale=self.scale, lr=self.lr * self.scale, rollback_streak=self.streak,
                   stalled=self.streak >= self.warn_after)

    def checkpoint_host(self) -> dict:
        return {"lr_backoff": {"scale": self.scale, "streak": self.streak}}

    def restore_checkpoint(self, host: dict, arrays: dict) -> None:
        saved = host.get("lr_backoff")  # a checkpoint from before the backoff: the full rate, no streak
        if saved is not None:
            self.scale, self.streak = float(saved["scale"]), int(saved["streak"])
        self._apply()
