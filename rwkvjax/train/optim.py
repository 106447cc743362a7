"""The one optimizer builder: parameter groups, each AdamW with its own warmup-cosine schedule, a global-norm
clip over the trained leaves, optional frozen groups, optional skipping of non-finite steps.

State-tuning (S0 and hypernetwork), offline hypernetwork training and pretraining all build theirs here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import optax

from rwkvjax.train.trainable import Trainable, group_labels


@dataclasses.dataclass(frozen=True)
class Group:
    """One parameter group: AdamW, linear warmup from 0, cosine from `peak` to `final` over the decay horizon."""

    peak: float = 0.0
    final: float = 0.0
    warmup: int = 0
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    decay_mask: Callable | None = None  # which leaves get weight decay (None: all)
    frozen: bool = False                # updates are zeros and the leaves stay out of the clip norm


def schedule(g: Group, decay_steps: int):
    """Warmup then cosine decay to `final` at `decay_steps`; constant `final` afterwards (for --forever)."""
    decay = max(decay_steps - g.warmup, 1)
    if g.warmup:
        return optax.warmup_cosine_decay_schedule(0.0, g.peak, g.warmup, g.warmup + decay, end_value=g.final)
    return optax.cosine_decay_schedule(g.peak, decay, alpha=g.final / g.peak if g.peak else 0.0)


def make_optimizer(labels: Any, groups: dict[str, Group], *, decay_steps: int, clip_norm: float | None = 1.0,
                   max_nonfinite: int | None = None) -> optax.GradientTransformation:
    """`labels`: a pytree (or a function of the params) naming each leaf's group."""
    def adam(g: Group):
        if g.frozen:
            return optax.set_to_zero()
        return optax.adamw(schedule(g, decay_steps), b1=g.b1, b2=g.b2, eps=g.eps, weight_decay=g.weight_decay,
                           mask=g.decay_mask)

    parts = []
    if any(g.frozen for g in groups.values()):
        # zero the frozen gradients first, so they do not count in the clip norm
        parts.append(optax.partition({n: optax.set_to_zero() if g.frozen else optax.identity()
                                      for n, g in groups.items()}, labels))
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(optax.partition({n: adam(g) for n, g in groups.items()}, labels))
    tx = optax.chain(*parts)
    return tx if max_nonfinite is None else optax.apply_if_finite(tx, max_nonfinite)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """State-tuning: a very high LR on S0, decayed 1 -> 0.01, as RWKV-PEFT's state tuning
    (https://github.com/JL-er/RWKV-PEFT)."""

    state_lr: float = 1.0
    state_lr_final: float = 0.01
    hyper_lr: float = 1e-3
    hyper_lr_final: float = 1e-4
    warmup_steps: int = 0
    decay_steps: int = 1000
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    max_consecutive_nonfinite: int = 100


def state_tuning_optimizer(trainable: Trainable, cfg: OptimConfig) -> optax.GradientTransformation:
    """AdamW for S0/shift ('state') and for the hypernetwork ('hyper'), each with its own schedule."""
    group = lambda peak, final: Group(peak, final, cfg.warmup_steps, cfg.b1, cfg.b2, cfg.eps, cfg.weight_decay)
    return make_optimizer(group_labels(trainable), {"state": group(cfg.state_lr, cfg.state_lr_final),
                                                    "hyper": group(cfg.hyper_lr, cfg.hyper_lr_final)},
                          decay_steps=cfg.decay_steps, clip_norm=cfg.clip_norm,
                          max_nonfinite=cfg.max_consecutive_nonfinite)
