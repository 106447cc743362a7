"""One jitted, data-parallel training step over a batch of windows (live + replay, per-window weights)."""

from __future__ import annotations

import functools

import chex
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rwkvjax.merges.units import PLAIN, UnitFns
from rwkvjax.model.config import Architecture
from rwkvjax.train.objective import Batch, loss_and_metrics
from rwkvjax.train.remat import POLICIES, available_memory
from rwkvjax.train.trainable import Trainable


def data_mesh() -> Mesh:
    """Every device of every process on one 'data' axis (multi-host: call jax.distributed.initialize() first)."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def available_device_memory() -> int:
    """Bytes free for one step's activations: an accelerator's own count, or the host's available memory."""
    if jax.default_backend() != "cpu":
        stats = jax.local_devices()[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return available_memory()


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """This process's windows -> one global batch split over the 'data' axis.

    Each process passes its own part (all rows with one process); the global batch is the concatenation
    of the parts in process order.
    """
    n_local = len(mesh.local_devices)
    if batch.inputs.shape[0] % n_local:
        raise ValueError(f"batch of {batch.inputs.shape[0]} windows does not divide over {n_local} local devices; "
                         "pad it with zero-weight windows")
    return shard_rows(batch, mesh)


def shard_rows(tree, mesh: Mesh, axis: int = 0):
    """Every array of `tree` split over the 'data' axis of the mesh along `axis` (its rows: this process's part,
    as `shard_batch`; axis 1 for a recurrent state, whose batch axis comes after the layer axis)."""
    spec = lambda a: NamedSharding(mesh, P(*([None] * axis), "data", *([None] * (np.ndim(a) - axis - 1))))
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(spec(a), np.asarray(a)), tree)


def replicate(tree, mesh: Mesh):
    """The same value on every device of the mesh (every process must pass the same `tree`)."""
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def to_host(tree):
    """Device values -> numpy, this process's part only: a batch-sharded array gives this process's rows
    (in the order it fed them), a replicated one its value."""
    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        shards = sorted(x.addressable_shards, key=lambda s: tuple(i.start or 0 for i in s.index))
        if x.sharding.is_fully_replicated:
            return np.asarray(shards[0].data)
        return np.concatenate([np.asarray(s.data) for s in shards], axis=0)
    return jax.tree.map(one, tree)


def make_train_step(config: Architecture, tx: optax.GradientTransformation, *, units: UnitFns = PLAIN,
                    wkv_impl="auto", max_traces: int | None = 1, remat: str = "full"):
    """Returns step(trainable, opt_state, params, batch) -> (trainable, opt_state, metrics).

    Gradients are taken w.r.t. `trainable` only; `params` (frozen) is an argument, not a constant,
    so large models are not baked into the executable. The trace guard fails on a recompile; chex keys it
    by definition site, so callers that build several steps at one site (one per evaluation arm) pass None.
    `remat`: a policy of `rwkvjax.train.remat` ('none', 'dots', 'full'; resolve 'auto' before).
    """
    if remat not in POLICIES:
        raise ValueError(f"make_train_step: remat policy {remat!r} is not one of {', '.join(POLICIES)} "
                         "('auto' is resolved by rwkvjax.train.remat.resolve_remat)")
    loss_fn = functools.partial(loss_and_metrics, config=config, units=units, wkv_impl=wkv_impl, per_unit=True,
                                remat=remat)

    def step(trainable: Trainable, opt_state, params, batch: Batch):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, params, batch)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), state_grad_norm=state_norm(grads),
                       nonfinite_total=opt_state.total_notfinite)
        return trainable, opt_state, metrics

    if max_traces is not None:
        step = chex.assert_max_traces(step, n=max_traces)
    return jax.jit(step, donate_argnums=(0, 1))


def state_norm(tr: Trainable) -> jax.Array:
    """Global norm over the start-state leaves (S0 and shifts), without the hypernetwork."""
    return optax.tree.norm([tr.wkv, tr.att_shift, tr.ffn_shift])


def make_eval_fn(config: Architecture, *, units: UnitFns = PLAIN, wkv_impl="auto"):
    """Loss and metrics without an update (scoring before training, replay surprise refresh)."""
    return jax.jit(functools.partial(loss_and_metrics, config=config, units=units, wkv_impl=wkv_impl,
                                     remat="none"))
