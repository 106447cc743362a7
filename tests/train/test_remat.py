"""Rematerialisation policies of the train step: the auto rule, exactness of every policy and of the frozen-head
gradient, and the activation estimate against the compiled step's own memory analysis."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rwkvjax
from benchmarks.common.checkpoints import param_spec
from rwkvjax.train import objective
from rwkvjax.train.objective import Batch, chunked_nll, loss_and_metrics
from rwkvjax.train.optim import OptimConfig, state_tuning_optimizer
from rwkvjax.train.remat import POLICIES, activation_bytes, choose_remat, resolve_remat
from rwkvjax.train.step import make_train_step
from rwkvjax.train.trainable import init_trainable

GB = 2 ** 30
SMALL = rwkvjax.Architecture(256, 64, 2, 256, 32, 32, 32, 32)


def test_auto_rule_prefers_no_recomputation_while_it_fits():
    shape = dict(n_layer=12, n_embd=768, dim_ffn=3072)  # the 0.1B model
    assert choose_remat(ctx_len=512, batch=4, available_bytes=20 * GB, **shape) == "none"
    assert choose_remat(ctx_len=4096, batch=4, available_bytes=20 * GB, **shape) == "full"
    assert choose_remat(ctx_len=512, batch=4, available_bytes=2 * GB, **shape) == "full"
    # the boundary is exactly the budget share of the available memory
    need = activation_bytes("none", ctx_len=512, batch=4, **shape)
    assert choose_remat(ctx_len=512, batch=4, available_bytes=need * 4, share=0.25, **shape) == "none"
    assert choose_remat(ctx_len=512, batch=4, available_bytes=need * 4 - 8, share=0.25, **shape) != "none"


def test_auto_rule_is_monotone_in_context_batch_and_memory():
    order = {p: i for i, p in enumerate(POLICIES)}
    shape = dict(n_layer=24, n_embd=2048, dim_ffn=8192)
    pick = lambda ctx, b, mem: order[choose_remat(ctx_len=ctx, batch=b, available_bytes=mem, **shape)]
    ctxs, mems = [64, 256, 512, 1024, 4096, 16384], [GB, 4 * GB, 16 * GB, 64 * GB, 256 * GB]
    for b in (1, 4):
        for mem in mems:
            picks = [pick(c, b, mem) for c in ctxs]
            assert picks == sorted(picks), (b, mem, picks)   # longer context: never less recomputation
        for c in ctxs:
            picks = [pick(c, b, m) for m in mems]
            assert picks == sorted(picks, reverse=True), (b, c, picks)   # more memory: never more


def test_resolve_keeps_named_policies_and_refuses_unknown_ones():
    assert resolve_remat("dots", ctx_len=512, batch=4, config=SMALL) == "dots"
    assert resolve_remat("auto", ctx_len=64, batch=1, config=SMALL, available_bytes=8 * GB) == "none"
    assert resolve_remat("auto", ctx_len=64, batch=1, config=SMALL, available_bytes=1) == "full"
    with pytest.raises(ValueError, match="remat"):
        resolve_remat("some", ctx_len=512, batch=4, config=SMALL)


def _batch(T, B, vocab):
    rng = np.random.default_rng(1)
    units = rng.integers(1, vocab, (B, T)).astype(np.int32)
    inputs = np.concatenate([np.zeros((B, 1), np.int32), units[:, :-1]], 1)
    mask = np.ones((B, T), np.float32)
    mask[0, T // 3:] = 0  # a short window: padding must stay out of loss and gradient
    weight = np.linspace(0.5, 1.5, B).astype(np.float32)
    return Batch(jnp.asarray(inputs), jnp.asarray(units), jnp.asarray(mask), jnp.asarray(weight),
                 jnp.full(B, float(T)))


def _reference_loss(tr, params, b, *, config):
    """The loss by plain autodiff: no remat, the head through the generic (recomputed) chunk path."""
    from rwkvjax.model.rwkv7 import embed, forward_hidden, head_logits
    from rwkvjax.train.trainable import initial_state
    hidden, _ = forward_hidden(params, embed(params, b.inputs), initial_state(tr, b.inputs.shape[0]),
                               config=config, remat=False)
    nll = chunked_nll(lambda h, _: head_logits(params, h), hidden, b.targets, None, 16)
    nll = jnp.where(b.mask > 0, nll, 0.0)
    return jnp.sum(b.weight * nll.sum(1)) / jnp.sum(b.weight * b.mask.sum(1))


def test_every_policy_gives_the_same_loss_and_start_state_gradient(tiny_model, monkeypatch):
    cfg, params = tiny_model.arch, tiny_model.params
    b = _batch(T=40, B=3, vocab=cfg.vocab_size)   # 40: not a multiple of the head chunk (16 below)
    key = jax.random.key(0)
    tr = init_trainable(cfg, train_shift=True)
    tr = jax.tree.map(lambda a: 0.1 * jax.random.normal(key, a.shape), tr)
    ref_loss, ref_grad = jax.jit(jax.value_and_grad(functools.partial(_reference_loss, config=cfg)))(tr, params, b)
    monkeypatch.setattr(objective, "HEAD_CHUNK", 16)  # several head chunks in a 40-unit window
    for policy in POLICIES:
        loss_fn = lambda t: loss_and_metrics(t, params, b, config=cfg, remat=policy)[0]
        loss, grad = jax.jit(jax.value_and_grad(loss_fn))(tr)
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6, err_msg=policy)
        for name in ("wkv", "att_shift", "ffn_shift"):
            g, r = getattr(grad, name), getattr(ref_grad, name)
            scale = float(jnp.abs(r).max())
            assert scale > 0, name
            err = float(jnp.abs(g - r).max()) / scale
            assert err < 1e-5, (policy, name, err)


def test_train_step_refuses_auto_and_unknown_policies():
    tr = init_trainable(SMALL)
    tx = state_tuning_optimizer(tr, OptimConfig())
    for bad in ("auto", "dotz", True):
        with pytest.raises(ValueError, match="remat"):
            make_train_step(SMALL, tx, remat=bad)


def _temp_bytes(cfg, T, B, policy):
    params = param_spec(cfg, jnp.float32)
    tr0 = init_trainable(cfg)
    tx = state_tuning_optimizer(tr0, OptimConfig())
    tr, opt = jax.eval_shape(lambda: tr0), jax.eval_shape(tx.init, tr0)
    i, f = jax.ShapeDtypeStruct((B, T), jnp.int32), jax.ShapeDtypeStruct((B, T), jnp.float32)
    w = jax.ShapeDtypeStruct((B,), jnp.float32)
    step = make_train_step(cfg, tx, remat=policy, max_traces=None)
    return step.lower(tr, opt, params, Batch(i, i, f, w, w)).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("policy", ["none", "dots"])
def test_activation_estimate_matches_the_compiled_step(policy):
    """The auto rule's per-token estimate against XLA's buffer assignment, on a config it was not fitted on."""
    cfg = rwkvjax.Architecture(256, 256, 3, 1024, 32, 32, 32, 32)
    B, T = 2, 128
    measured = _temp_bytes(cfg, 2 * T, B, policy) - _temp_bytes(cfg, T, B, policy)
    est = activation_bytes(policy, ctx_len=T, batch=B, n_layer=cfg.n_layer, n_embd=cfg.n_embd,
                           dim_ffn=cfg.dim_ffn)
    assert 0.7 < est / measured < 1.3, (policy, est, measured)
    assert activation_bytes("none", ctx_len=T, batch=B, n_layer=3, n_embd=256, dim_ffn=1024) < \
        activation_bytes("dots", ctx_len=T, batch=B, n_layer=3, n_embd=256, dim_ffn=1024)


def test_train_config_takes_the_policy_flag_and_refuses_others():
    from rwkvjax.errors import ConfigError
    from rwkvjax.train.config import TrainConfig
    assert TrainConfig(demo=True).remat == "auto"
    assert TrainConfig(demo=True, remat="none").remat == "none"
    with pytest.raises(ConfigError, match="--remat"):
        TrainConfig(demo=True, remat="dot")
