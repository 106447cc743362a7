"""The parts of a `train` run's state that belong to the run itself rather than to one of its components: its
counters, and what identifies it (base model, settings). The components (learner or project states, live
windows, update gate, session memories) are parts of their own; `train.run.Trainer` registers them all in one
`io.checkpoint.RunState`.
"""

from __future__ import annotations

import dataclasses
import time

from rwkvjax.errors import CheckpointMismatch
from rwkvjax.io.checkpoint import StatePart
from rwkvjax.model.config import Architecture
from rwkvjax.train.config import TrainConfig
from rwkvjax.train.data import Window


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
