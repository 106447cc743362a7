import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rwkvjax
from ingest.dyntok import DynamicTokenizer, DynTokSettings
from rwkvjax.hypernet import forward_units, init_hypernet, unit_loss
from rwkvjax.tokenizer import ByteTokenizer

V, S = 256, 4
TEXT = b"the cat and the hat: the end."


@pytest.fixture(scope="module")
def model(tiny_model):
    config, params = tiny_model
    hyper = init_hypernet(config, jax.random.key(0))
    return config, params, hyper


def _slots():
    # (t,h), (h,e), (a,t) active; slot 3 empty
    slots = np.array([[116, 104], [104, 101], [97, 116], [-1, -1]], np.int32)
    return slots, slots[:, 0] >= 0


def test_merges_off_is_bit_identical_to_plain_model(model):
    config, params, hyper = model
    units = np.frombuffer(TEXT, np.uint8).astype(np.int32).reshape(1, -1)
    state = rwkvjax.zero_state(config, 1)
    slots = np.full((S, 2), -1, np.int32)
    logits, st = forward_units(params, hyper, units, state, slots, np.zeros(S, bool), config=config)
    ref, st_ref = rwkvjax.forward(params, units, state, config=config)
    assert logits.shape == (1, units.shape[1], V + S)
    np.testing.assert_array_equal(np.asarray(logits[..., :V]), np.asarray(ref))
    assert np.isneginf(np.asarray(logits[..., V:])).all()
    for a, b in zip(st, st_ref):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_untrained_hypernet_reads_a_pair_as_its_second_token_and_scores_it_as_its_first(model):
    config, params, hyper = model
    slots, active = _slots()
    state = rwkvjax.zero_state(config, 1)
    units = np.array([[32, V + 0, 101, 32]], np.int32)  # " " [th] "e" " " : 4 recurrent steps
    logits, _ = forward_units(params, hyper, units, state, slots, active, config=config)
    ref, _ = rwkvjax.forward(params, np.array([[32, 104, 101, 32]], np.int32), state, config=config)
    np.testing.assert_array_equal(np.asarray(logits[..., :V]), np.asarray(ref))
    lg = np.asarray(logits[0])
    for s, (a, _) in enumerate(slots[:3]):
        np.testing.assert_allclose(lg[:, V + s], lg[:, a], rtol=1e-5, atol=1e-5)
    assert np.isneginf(lg[:, V + 3]).all()


def test_per_position_mask_hides_slots_before_installation(model):
    config, params, hyper = model
    slots, _ = _slots()
    T = 5
    mask_TS = np.zeros((T, S), bool)
    mask_TS[3:, 1] = True  # slot 1 installed at unit 3
    logits, _ = forward_units(params, hyper, np.full((1, T), 32, np.int32), rwkvjax.zero_state(config, 1),
                              slots, mask_TS, config=config)
    virt = np.asarray(logits[0, :, V:])
    assert np.isneginf(virt[:3]).all() and np.isfinite(virt[3:, 1]).all() and np.isneginf(virt[:, [0, 2, 3]]).all()


def _batch():
    bt = ByteTokenizer()
    tok = DynamicTokenizer(DynTokSettings(v_base=V, threshold=2, n_slots=S), bt.decode_bytes)
    tok.encode(bt.encode("the cat and the hat, the end. " * 2))
    enc = tok.encode(bt.encode("the cat and the hat"))
    assert (enc.units >= V).sum() >= 3, "fixture text must produce merges"
    inputs, targets, mask_TS = enc.training_pair(bos=0)
    return inputs[None], targets[None], enc.slots, mask_TS[None], enc.n_base


def test_merges_on_gradients_reach_every_hypernet_leaf_and_it_learns(model):
    config, params, hyper0 = model
    inputs, targets, slots, mask, n_bytes = _batch()
    state = rwkvjax.zero_state(config, 1)

    def loss_fn(h):
        return unit_loss(params, h, inputs, targets, state, slots, mask, config=config)

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    opt = optax.adam(3e-3)
    opt_state = opt.init(hyper0)
    hyper, losses = hyper0, []
    for step in range(6):
        (loss, (bits, n, _)), g = grad_fn(hyper)
        losses.append(float(loss))
        assert np.isfinite(float(bits)) and float(n) == inputs.shape[1]
        norms = {k: float(jnp.linalg.norm(v)) for k, v in _leaves(g).items()}
        if step == 0:  # zero output layers: only they (and not the first layers) get gradient at init
            assert all(norms[k] > 0 for k in ("inp.w2", "inp.b2", "out.w2", "out.b2")), norms
            assert norms["inp.w1"] == 0 and norms["out.w1"] == 0
        else:
            assert all(v > 0 for v in norms.values()), norms
        upd, opt_state = opt.update(g, opt_state, hyper)
        hyper = optax.apply_updates(hyper, upd)
    moved = {k: not np.array_equal(np.asarray(a), np.asarray(b))
             for (k, a), b in zip(_leaves(hyper0).items(), _leaves(hyper).values())}
    assert all(moved.values()), moved
    assert losses[-1] < losses[0]
    # D1: the trained hypernet changes what the model sees for a merged pair
    units = np.array([[32, V + 0, 101, 32]], np.int32)
    l0, _ = forward_units(params, hyper0, units, state, slots, slots[:, 0] >= 0, config=config)
    l1, _ = forward_units(params, hyper, units, state, slots, slots[:, 0] >= 0, config=config)
    assert not np.allclose(np.asarray(l0[:, 1:, :V]), np.asarray(l1[:, 1:, :V]))


def test_strict_bits_are_a_code_length_over_the_merged_stream(model):
    config, params, hyper = model
    inputs, targets, slots, mask, n_bytes = _batch()
    state = rwkvjax.zero_state(config, 1)
    _, (bits, n, _) = unit_loss(params, hyper, inputs, targets, state, slots, mask, config=config)
    logits, _ = forward_units(params, hyper, inputs, state, slots, mask, config=config)
    p = jax.nn.softmax(logits, -1)
    np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, rtol=1e-5)
    ref = -np.log2(np.take_along_axis(np.asarray(p, np.float64), targets[..., None], -1)).sum()
    np.testing.assert_allclose(float(bits), ref, rtol=1e-4)
    assert n == len(targets[0]) < n_bytes  # fewer recurrent steps than bytes
    # padding is excluded
    pad = np.ones_like(targets, bool)
    pad[:, -3:] = False
    _, (bits_p, n_p, _) = unit_loss(params, hyper, inputs, targets, state, slots, mask, pad, config=config)
    assert n_p == n - 3 and float(bits_p) < float(bits)


def _leaves(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {".".join(str(getattr(k, "name", k)) for k in path): v for path, v in flat}
