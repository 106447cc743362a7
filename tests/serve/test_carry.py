"""The decode carry's rows: every array is gathered, scattered and resized along its own batch axis."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rwkvjax.model.state import State
from rwkvjax.serve.decode import Carry
from rwkvjax.serve.engine import _move_row, _put_row, _resize, _row_state
from rwkvjax.serve.sampling import Penalties

# no dimension but the batch has size 1, 2, 3 or 5: each array's batch axis is found by its size
L, C, H, N, V = 7, 4, 4, 4, 8


def _rows(ids) -> Carry:
    """A carry whose row r holds the value ids[r] in every array (the keys: a key made from ids[r])."""
    ids = np.asarray(ids)
    n = len(ids)
    per_row = lambda shape_after, lead=(): np.broadcast_to(
        ids.reshape((1,) * len(lead) + (n,) + (1,) * len(shape_after)), lead + (n,) + shape_after).astype(np.float32)
    state = State(jnp.asarray(per_row((C,), (L,))), jnp.asarray(per_row((C,), (L,))),
                  jnp.asarray(per_row((H, N, N), (L,))))
    pen = Penalties(jnp.asarray(per_row((V,))), jnp.asarray(per_row((V,)) % 2 == 1))
    keys = jax.vmap(jax.random.key)(jnp.asarray(ids, jnp.uint32))
    return Carry(jnp.asarray(ids, jnp.int32), state, pen, keys)


def _row_ids(carry: Carry, n: int) -> list[list[int]]:
    """Per array, the row id each of its n rows holds, read along the axis whose size is n."""
    out = []
    for a in jax.tree.leaves(carry):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            out.append([int(jax.random.key_data(k)[-1]) for k in a])
            continue
        a = np.asarray(a)
        axis = a.shape.index(n)
        out.append([int(np.take(a, r, axis=axis).max()) for r in range(n)])
    return out


def _check(carry: Carry, ids: list[int]) -> None:
    """Every array holds rows `ids` (the boolean array: their parity)."""
    for a, got in zip(jax.tree.leaves(carry), _row_ids(carry, len(ids))):
        assert got == ([i % 2 for i in ids] if a.dtype == bool else ids), (a.shape, got)


def test_every_field_has_a_batch_axis():
    axes = Carry.batch_axes()  # a field without one cannot be declared (`decode._rows`): KeyError here
    assert set(axes) == {f.name for f in dataclasses.fields(Carry)}
    assert axes.pop("state") == 1 and set(axes.values()) == {0}  # State arrays are [L, B, ...]


def test_resize_put_and_move_rows_along_each_arrays_own_axis():
    _check(_resize(_rows([10, 11, 12]), 5), [10, 11, 12, 10, 10])
    _check(_resize(_rows([10, 11, 12]), 2), [10, 11])
    _check(_put_row(_rows([10, 11, 12]), _rows([7]), jnp.int32(1)), [10, 7, 12])
    _check(_move_row(_rows([10, 11, 12]), jnp.int32(2), jnp.int32(0)), [12, 11, 12])
    one = _row_state(_rows([10, 11, 12]).state, jnp.int32(1))
    assert all(np.asarray(a).shape[1] == 1 and (np.asarray(a) == 11).all() for a in one)
