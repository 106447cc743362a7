"""State-tuning step: exact loss, frozen weights untouched, learning, no recompiles, data parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import rwkvjax
from rwkvjax.model.init import init_params
from rwkvjax.model.state import start_state
from rwkvjax.serve.generate import generate_ids
from rwkvjax.train.objective import Batch, loss_and_metrics
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.step import make_train_step
from rwkvjax.train.trainable import init_trainable
from tests.conftest import REPO

CODE = b"def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n" * 4
SMALL = rwkvjax.Architecture(256, 64, 2, 256, 32, 32, 32, 32)


def _batch(T=32, B=2, lengths=None):
    lengths = lengths or [T] * B
    units = np.frombuffer(CODE[: T * B], np.uint8).astype(np.int32).reshape(B, T)
    inputs = np.concatenate([np.zeros((B, 1), np.int32), units[:, :-1]], 1)
    mask = (np.arange(T)[None] < np.asarray(lengths)[:, None]).astype(np.float32)
    return Batch(jnp.asarray(inputs), jnp.asarray(units), jnp.asarray(mask), jnp.ones(B), jnp.asarray(lengths, float))


def test_step0_loss_equals_frozen_forward(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    b = _batch()
    loss, m = loss_and_metrics(init_trainable(cfg), params, b, config=cfg)
    logits, _ = rwkvjax.forward(params, b.inputs, rwkvjax.zero_state(cfg, 2), config=cfg)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, b.targets).mean()
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
    np.testing.assert_allclose(float(m["bits"] / m["bytes"]), float(ref) / np.log(2), rtol=1e-6)


def test_frozen_leaves_bit_identical_and_optimizer_state_only_for_trainables(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    frozen_copy = jax.tree.map(np.array, params)
    tr = init_trainable(cfg, train_shift=True)
    tx = state_tuning_optimizer(tr, OptimConfig(decay_steps=10))
    opt = tx.init(tr)
    trainable_shapes = {a.shape for a in jax.tree.leaves(tr)}
    assert {a.shape for a in jax.tree.leaves(opt) if a.ndim} <= trainable_shapes
    step = make_train_step(cfg, tx)
    for _ in range(3):
        tr, opt, _ = step(tr, opt, params, _batch())
    chex.assert_trees_all_equal(jax.tree.map(np.array, params), frozen_copy)
    assert float(jnp.abs(tr.wkv).max()) > 0 and float(jnp.abs(tr.att_shift).max()) > 0


def test_loss_falls_on_repeated_corpus():
    params = init_params(SMALL, 0, live_output=True)  # official init but live outputs, so the state matters
    tr = init_trainable(SMALL)
    tx = state_tuning_optimizer(tr, OptimConfig(state_lr=0.1, state_lr_final=0.001, decay_steps=50))
    opt = tx.init(tr)
    step = make_train_step(SMALL, tx)
    b = _batch(T=64)
    losses = []
    for _ in range(50):
        tr, opt, m = step(tr, opt, params, b)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.8 * losses[0], (losses[0], losses[-1])
    # the tuned S0 changes what `generate` samples
    base = list(generate_ids(params, SMALL, list(b"def "), max_tokens=16, temperature=0))
    tuned = list(generate_ids(params, SMALL, list(b"def "), max_tokens=16, temperature=0,
                              state=start_state(tr.wkv, 1)))
    assert tuned != base


def test_step_does_not_recompile_as_windows_vary(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    tr = init_trainable(cfg)
    tx = state_tuning_optimizer(tr, OptimConfig())
    opt = tx.init(tr)
    step = make_train_step(cfg, tx, max_traces=1)  # a second trace raises
    for lengths in ([32, 32], [5, 32], [1, 17], [32, 0]):
        b = _batch(lengths=lengths)
        b = Batch(b.inputs, b.targets, b.mask, jnp.asarray([1.0, 0.5 if lengths[1] else 0.0]), b.nbytes)
        tr, opt, m = step(tr, opt, params, b)
        assert np.isfinite(float(m["loss"]))


def test_nonfinite_updates_are_skipped_and_counted(tiny_model):
    cfg, params = tiny_model.arch, tiny_model.params
    tr = init_trainable(cfg)
    tx = state_tuning_optimizer(tr, OptimConfig())
    opt = tx.init(tr)
    step = make_train_step(cfg, tx, max_traces=2)
    b = _batch()
    bad = Batch(b.inputs, b.targets, b.mask, jnp.asarray([jnp.nan, 1.0]), b.nbytes)
    tr2, opt, m = step(tr, opt, params, bad)
    assert int(m["nonfinite_total"]) == 1
    chex.assert_trees_all_equal(tr2.wkv, jnp.zeros_like(tr2.wkv))


_DP_SCRIPT = """
import json, jax, jax.numpy as jnp, numpy as np
import rwkvjax
from rwkvjax.model.init import init_params
from rwkvjax.train.objective import Batch
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.step import data_mesh, make_train_step, replicate, shard_batch
from rwkvjax.train.trainable import init_trainable
cfg = rwkvjax.Architecture(256, 64, 2, 256, 32, 32, 32, 32)
mesh = data_mesh()
params = replicate(init_params(cfg, 0, live_output=True), mesh)
tr = init_trainable(cfg)
tx = state_tuning_optimizer(tr, OptimConfig(state_lr=0.1))
opt = tx.init(tr)
tr, opt = replicate(tr, mesh), replicate(opt, mesh)
rng = np.random.default_rng(0)
u = rng.integers(1, 256, (4, 16)).astype(np.int32)
b = Batch(jnp.asarray(np.concatenate([np.zeros((4, 1), np.int32), u[:, :-1]], 1)), jnp.asarray(u),
          jnp.ones((4, 16)), jnp.asarray([1.0, 0.5, 0.25, 1.0]), jnp.full(4, 16.0))
step = make_train_step(cfg, tx)
losses = []
for _ in range(3):
    tr, opt, m = step(tr, opt, params, shard_batch(b, mesh))
    losses.append(float(m["loss"]))
print(json.dumps({"devices": len(jax.devices()), "losses": losses, "s0": float(jnp.sum(jnp.abs(tr.wkv)))}))
"""


def _run_dp(n_devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", _DP_SCRIPT], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_data_parallel_four_devices_equals_one():
    one, four = _run_dp(1), _run_dp(4)
    assert one["devices"] == 1 and four["devices"] == 4
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(four["s0"], one["s0"], rtol=1e-4)

