"""Optimizer for the trainable pytree: global-norm clipping, AdamW per group, skip of non-finite steps."""

from __future__ import annotations

import dataclasses

import optax

from rwkvjax.trainable import Trainable, group_labels


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    # RWKV state-tuning recipe: very high LR on S0, decayed 1 -> 0.01 (RWKV7.md §10).
    state_lr: float = 1.0
    state_lr_final: float = 0.01
    hyper_lr: float = 1e-3
    hyper_lr_final: float = 1e-4
    warmup_steps: int = 0
    decay_steps: int = 1000  # cosine horizon; constant at the final LR afterwards (for --forever)
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    max_consecutive_nonfinite: int = 100


def _schedule(peak: float, final: float, cfg: OptimConfig):
    decay = max(cfg.decay_steps - cfg.warmup_steps, 1)
    if cfg.warmup_steps:
        return optax.warmup_cosine_decay_schedule(0.0, peak, cfg.warmup_steps, cfg.warmup_steps + decay,
                                                  end_value=final)
    return optax.cosine_decay_schedule(peak, decay, alpha=final / peak if peak else 0.0)


def make_optimizer(trainable: Trainable, cfg: OptimConfig) -> optax.GradientTransformation:
    """AdamW for S0/shift ('state') and for the hypernetwork ('hyper'), each with its own schedule."""
    adam = lambda peak, final: optax.adamw(_schedule(peak, final, cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                           weight_decay=cfg.weight_decay)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.partition({"state": adam(cfg.state_lr, cfg.state_lr_final),
                         "hyper": adam(cfg.hyper_lr, cfg.hyper_lr_final)}, group_labels(trainable)),
    )
    return optax.apply_if_finite(tx, cfg.max_consecutive_nonfinite)
