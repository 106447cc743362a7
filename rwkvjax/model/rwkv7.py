"""RWKV-7 x070 forward pass as pure functions over `Params` and `State` pytrees.

Shape legend: B batch, T time, C channels, H heads, N head size, V vocab, L layers, F FFN width.
Activations, LayerNorm statistics, the decay and the WKV state are float32; matmuls take the weight
dtype (fp32 or bf16) with float32 accumulation; int8 matrices (rwkvjax.model.quant) are widened to float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rwkvjax.model.config import Architecture
from rwkvjax.model.params import Block, OutIn, Params
from rwkvjax.model.quant import QInt8, embed_rows
from rwkvjax.model.state import State
from rwkvjax.model.wkv import WkvImpl, wkv7

_LN_EPS = 1e-5
_GN_EPS_PER_DIM = 1e-5  # GroupNorm eps = head_size * 1e-5 (64e-5 for N = 64)
_DECAY_SCALE = 0.6065306597126334  # exp(-0.5): log-decay = -exp(-0.5) * sigmoid(w)


def _mm(x, W):
    """x @ W with the weight's dtype and float32 accumulation (IEEE fp32 when weights are fp32).

    `W` is [in, out]; a `QInt8` (int8 rows [out, in] and their scales); or an `OutIn` holding the [out, in]
    matrix, float or `QInt8` (the decoding layout of `unstack_layers`).
    """
    if isinstance(W, OutIn):
        if isinstance(W.w, QInt8):
            return _mm_int8(x, W.w)
        w = W.w
        prec = jax.lax.Precision.HIGHEST if w.dtype == jnp.float32 else None
        return jax.lax.dot_general(x.astype(w.dtype), w, (((x.ndim - 1,), (1,)), ((), ())), precision=prec,
                                   preferred_element_type=jnp.float32)
    if isinstance(W, QInt8):
        return _mm_int8(x, W)
    prec = jax.lax.Precision.HIGHEST if W.dtype == jnp.float32 else None
    return jnp.matmul(x.astype(W.dtype), W, precision=prec, preferred_element_type=jnp.float32)


_INT8_BLOCK_BYTES = 1 << 18  # float32 bytes of one widened row block: it stays in the core's L2 cache


def _mm_int8(x, W: QInt8):
    """x @ (q * scale[:, None]).T, the int8 rows widened to float32 on the fly, the scale applied per output.

    XLA:CPU has no int8-weight matmul and does not fuse the widening into its matrix-vector kernel: widening a
    whole matrix writes (and page-faults) a float32 copy 4x its size at every call (0.1B head: ~130 ms, 10x the
    float32 matmul). On CPU the rows are instead widened a block of `_INT8_BLOCK_BYTES` at a time inside a loop,
    each block multiplied while it is in cache, so memory traffic is the int8 bytes (the head: ~9 ms).
    Elsewhere (GPU) XLA fuses the widening into the matmul.
    """
    out_dim, in_dim = W.q.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_dim).astype(jnp.float32)
    block = _int8_block_rows(out_dim, in_dim)
    widen = lambda q: q.astype(jnp.float32)
    if block < out_dim and jax.default_backend() == "cpu":
        # block [blk, in] . x [rows, in] -> [blk, rows]: x is read in place, not re-laid out at every block
        dot = lambda q: jax.lax.dot_general(widen(q), x2, (((1,), (1,)), ((), ())),
                                            precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
        _, y = jax.lax.scan(lambda _, q: (None, dot(q)), None, W.q.reshape(out_dim // block, block, in_dim))
        y = y.reshape(out_dim, x2.shape[0]).T
    else:
        y = jax.lax.dot_general(x2, widen(W.q), (((1,), (1,)), ((), ())), precision=jax.lax.Precision.HIGHEST,
                                preferred_element_type=jnp.float32)
    return (y * W.scale).reshape(*lead, out_dim)


def _int8_block_rows(out_dim: int, in_dim: int) -> int:
    """The largest power-of-two row count dividing `out_dim` whose float32 block fits `_INT8_BLOCK_BYTES`."""
    block = 1
    while out_dim % (2 * block) == 0 and 2 * block * in_dim * 4 <= _INT8_BLOCK_BYTES:
        block *= 2
    return block


def _f32(x):
    return x.astype(jnp.float32)


def layer_norm(x, w, b, eps=_LN_EPS):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * _f32(w) + _f32(b)


def _shift(x_BTC, prev_BC):
    """Sequence of previous tokens: [prev, x_0, ..., x_{T-2}]."""
    return jnp.concatenate([prev_BC[:, None, :], x_BTC[:, :-1]], axis=1)


def time_mix(p: Block, x_BTC, shift_BC, S_BHNN, v_first_BTC, is_first, H, N, wkv_impl):
    B, T, C = x_BTC.shape
    xin = layer_norm(x_BTC, p.ln1_w, p.ln1_b)
    xx = _shift(xin, shift_BC) - xin
    xr, xw, xk, xv, xa, xg = (xin + xx * _f32(m) for m in (p.x_r, p.x_w, p.x_k, p.x_v, p.x_a, p.x_g))

    r = _mm(xr, p.W_r)
    w_pre = _f32(p.w0) + _mm(jnp.tanh(_mm(xw, p.w1)), p.w2)
    k = _mm(xk, p.W_k)
    v = _mm(xv, p.W_v)
    iclr = jax.nn.sigmoid(_f32(p.a0) + _mm(_mm(xa, p.a1), p.a2))
    g = _mm(jax.nn.sigmoid(_mm(xg, p.g1)), p.g2)

    # Value residual: layer 0 defines v_first; later layers lerp towards it.
    v_first = jnp.where(is_first, v, v_first_BTC)
    v = v + (v_first - v) * jax.nn.sigmoid(_f32(p.v0) + _mm(_mm(xv, p.v1), p.v2))

    heads = lambda t: t.reshape(B, T, H, N)
    kk = heads(k * _f32(p.k_k))
    kk = kk / jnp.maximum(jnp.linalg.norm(kk, axis=-1, keepdims=True), 1e-12)
    k = k * (1 + (iclr - 1) * _f32(p.k_a))  # after kk: kk uses the original key
    log_w = -_DECAY_SCALE * jax.nn.sigmoid(w_pre)

    r_h, k_h, v_h = heads(r), heads(k), heads(v)
    y, S_new = wkv7(r_h, heads(log_w), k_h, v_h, -kk, kk * heads(iclr), S_BHNN, impl=wkv_impl)

    mu = jnp.mean(y, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(y - mu), axis=-1, keepdims=True)
    y = ((y - mu) * jax.lax.rsqrt(var + N * _GN_EPS_PER_DIM)).reshape(B, T, C)
    y = y * _f32(p.lnx_w) + _f32(p.lnx_b)
    bonus = jnp.sum(r_h * k_h * _f32(p.r_k), axis=-1, keepdims=True) * v_h
    y = y + bonus.reshape(B, T, C)
    out = _mm(y * g, p.W_o)
    return out, xin[:, -1], S_new, v_first


def channel_mix(p: Block, x_BTC, shift_BC):
    xin = layer_norm(x_BTC, p.ln2_w, p.ln2_b)
    kx = xin + (_shift(xin, shift_BC) - xin) * _f32(p.ffn_x_k)
    h = jnp.square(jax.nn.relu(_mm(kx, p.ffn_key)))
    return _mm(h, p.ffn_value), xin[:, -1]


def embed(params: Params, tokens_BT) -> jax.Array:
    """Raw (pre-ln0) embeddings, float32 [B,T,C]."""
    if isinstance(params.emb, QInt8):
        return embed_rows(params.emb, tokens_BT)
    return _f32(jnp.take(params.emb, tokens_BT, axis=0))


def head_rows(params: Params, ids) -> jax.Array:
    """The output head's row of each id (its logit is the hidden state's dot with it), float32 [..., C]."""
    if isinstance(params.head, QInt8):  # int8 rows [V, C]
        return embed_rows(params.head, ids)
    return _f32(jnp.take(params.head.T, ids, axis=0))  # the float head is [C, V]


def vocab_rows(params: Params) -> int:
    """V, the number of base token ids (rows of the embedding)."""
    return (params.emb.q if isinstance(params.emb, QInt8) else params.emb).shape[0]


def forward_hidden(params: Params, x_BTC, state: State, *, config: Architecture,
                   wkv_impl: WkvImpl | str = WkvImpl.AUTO, remat: bool = False):
    """Raw embeddings -> final hidden states (after ln_out) [B,T,C] and the new state."""
    H, N = config.n_head, config.head_size
    x = layer_norm(_f32(x_BTC), params.ln0_w, params.ln0_b)

    def layer(carry, xs):
        x, v_first = carry
        p, att_shift, ffn_shift, S, idx = xs
        dx, att_shift, S, v_first = time_mix(p, x, att_shift, S, v_first, idx == 0, H, N, wkv_impl)
        x = x + dx
        dx, ffn_shift = channel_mix(p, x, ffn_shift)
        return (x + dx, v_first), (att_shift, ffn_shift, S)

    if remat:
        layer = jax.checkpoint(layer)
    if isinstance(params.blocks, tuple):  # per-layer weights (`params.unstack_layers`): an unrolled loop
        carry, outs = (x, jnp.zeros_like(x)), []
        for i, p in enumerate(params.blocks):
            carry, out = layer(carry, (p, state.att_shift[i], state.ffn_shift[i], state.wkv[i], i))
            outs.append(out)
        x = carry[0]
        att, ffn, wkv = (jnp.stack(o) for o in zip(*outs))
    else:
        xs = (params.blocks, state.att_shift, state.ffn_shift, state.wkv, jnp.arange(config.n_layer))
        (x, _), (att, ffn, wkv) = jax.lax.scan(layer, (x, jnp.zeros_like(x)), xs)
    x = layer_norm(x, params.ln_out_w, params.ln_out_b)
    return x, State(att_shift=att, ffn_shift=ffn, wkv=wkv)


def head_logits(params: Params, hidden_BTC) -> jax.Array:
    return _mm(hidden_BTC, params.head)


@functools.partial(jax.jit, static_argnames=("config", "wkv_impl", "remat"))
def forward(params: Params, tokens_BT, state: State, *, config: Architecture,
            wkv_impl: WkvImpl | str = WkvImpl.AUTO, remat: bool = False):
    """Tokens [B,T] (any T >= 1) -> (logits [B,T,V] float32, new State)."""
    hidden, new_state = forward_hidden(params, embed(params, tokens_BT), state, config=config,
                                       wkv_impl=wkv_impl, remat=remat)
    return head_logits(params, hidden), new_state


def piece_lengths(n: int, max_len: int) -> list[int]:
    """Greedy split of n into powers of two <= max_len (max_len a power of two): a stream scored in these
    pieces carries its state exactly (no padding) and compiles at most log2(max_len) + 1 shapes."""
    out = []
    while n:
        p = max_len
        while p > n:
            p //= 2
        out.append(p)
        n -= p
    return out
