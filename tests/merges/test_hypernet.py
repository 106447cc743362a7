import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rwkvjax
from rwkvjax.merges.dyntok import DynamicTokenizer, DynTokSettings, table_at
from rwkvjax.merges.hypernet import SlotTables, UnitPositions, forward_units, init_hypernet, unit_logits, unit_loss
from rwkvjax.model.rwkv7 import head_logits
from rwkvjax.text.tokenizer import ByteTokenizer

V, S = 256, 4
TEXT = b"the cat and the hat: the end."


@pytest.fixture(scope="module")
def model(tiny_model):
    config, params = tiny_model.arch, tiny_model.params
    hyper = init_hypernet(config, jax.random.key(0))
    return config, params, hyper


def _slots():
    # (t,h), (h,e), (a,t) active; slot 3 empty
    slots = np.array([[116, 104], [104, 101], [97, 116], [-1, -1]], np.int32)
    return SlotTables.of(slots)


def _no_prev(T):
    return UnitPositions(jnp.arange(T, dtype=jnp.int32)[None], jnp.full((1, T), -1, jnp.int32))


def test_merges_off_is_bit_identical_to_plain_model(model):
    config, params, hyper = model
    units = np.frombuffer(TEXT, np.uint8).astype(np.int32).reshape(1, -1)
    state = rwkvjax.zero_state(config, 1)
    tables = SlotTables.of(np.full((S, 2), -1, np.int32))
    logits, st = forward_units(params, hyper, units, state, tables, UnitPositions.of(units), config=config)
    ref, st_ref = rwkvjax.forward(params, units, state, config=config)
    assert logits.shape == (1, units.shape[1], V + S)
    np.testing.assert_array_equal(np.asarray(logits[..., :V]), np.asarray(ref))
    assert np.isneginf(np.asarray(logits[..., V:])).all()
    for a, b in zip(st, st_ref):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _group_mass(p_TU, slots_S2):
    """Per position and base token a: P(unit a) + sum of P(slot) over slots starting with a."""
    out = p_TU[:, :V].copy()
    for s, (a, _) in enumerate(slots_S2):
        if a >= 0:
            out[:, a] += p_TU[:, V + s]
    return out


def test_untrained_hypernet_reads_a_pair_as_its_second_token_and_splits_its_first_tokens_mass(model):
    config, params, hyper = model
    tables = _slots()
    state = rwkvjax.zero_state(config, 1)
    units = np.array([[32, V + 0, 101, 32]], np.int32)  # " " [th] "e" " " : 4 recurrent steps
    logits, _ = forward_units(params, hyper, units, state, tables, _no_prev(4), config=config)
    ref, _ = rwkvjax.forward(params, np.array([[32, 104, 101, 32]], np.int32), state, config=config)
    p = np.asarray(jax.nn.softmax(logits[0], -1))
    p_ref = np.asarray(jax.nn.softmax(ref[0], -1))
    # no probability is counted twice: a's mass is exactly split between "a alone" and the slots (a, .)
    np.testing.assert_allclose(_group_mass(p, np.asarray(tables.slots_BS2[0])), p_ref, rtol=2e-5, atol=1e-7)
    lg = np.asarray(logits[0])
    for s, (a, _) in enumerate(np.asarray(tables.slots_BS2[0])[:3]):  # z = 0: an even split
        np.testing.assert_allclose(lg[:, V + s], lg[:, a], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(lg[:, a], np.asarray(ref[0])[:, a] - np.log(2.0), rtol=1e-5, atol=1e-5)
    assert np.isneginf(lg[:, V + 3]).all()


def test_slots_follow_the_table_in_force_at_each_position(model):
    config, params, hyper = model
    T = 6
    prior = np.array([[116, 104], [-1, -1], [97, 116], [-1, -1]], np.int32)
    end = np.array([[116, 104], [104, 101], [116, 101], [-1, -1]], np.int32)
    avail = np.array([0, 3, 4, np.iinfo(np.int32).max], np.int32)  # slot 1 installed at 3; slot 2 replaced at 4
    tables = SlotTables.of(end, prior, avail)
    hidden = jax.random.normal(jax.random.key(1), (1, T, config.n_embd))
    lg = np.asarray(unit_logits(params, hyper, hidden, tables, _no_prev(T))[0])
    virt = lg[:, V:]
    assert np.isneginf(virt[:3, 1]).all() and np.isfinite(virt[3:, 1]).all()
    assert np.isfinite(virt[:, [0, 2]]).all() and np.isneginf(virt[:, 3]).all()
    # slot 2 reads (a,t) before position 4 and (t,e) from then on: it shares the first token's logit
    np.testing.assert_allclose(virt[:4, 2], lg[:4, 97], rtol=1e-6)
    np.testing.assert_allclose(virt[4:, 2], lg[4:, 116], rtol=1e-6)
    p = np.asarray(jax.nn.softmax(jnp.asarray(lg), -1))
    base = np.asarray(jax.nn.softmax(head_logits(params, hidden)[0], -1))
    for t in range(T):
        np.testing.assert_allclose(_group_mass(p[t:t + 1], table_at(prior, end, avail, t)), base[t:t + 1],
                                   rtol=2e-5, atol=1e-7)


def test_canonical_exclusion_after_an_unmerged_first_constituent(model):
    config, params, hyper = model
    tables = _slots()
    T = 3
    hidden = jax.random.normal(jax.random.key(2), (1, T, config.n_embd))
    # unit 0 = "t" was emitted alone although (t,h) was in the table: unit 1 cannot start with "h"
    pos = UnitPositions(jnp.arange(T, dtype=jnp.int32)[None], jnp.array([[-1, 116, 97]], jnp.int32))
    lg = np.asarray(unit_logits(params, hyper, hidden, tables, pos)[0])
    assert np.isneginf(lg[1, 104]) and np.isneginf(lg[1, V + 1])  # "h" and slot (h,e)
    assert np.isfinite(lg[1, [101, 116]]).all() and np.isfinite(lg[1, V + 0])
    assert np.isneginf(lg[2, 116]) and np.isneginf(lg[2, V + 0])  # after "a" with (a,t): no "t", no (t,h)
    assert np.isfinite(lg[0, :V]).all()  # first unit of a segment: nothing excluded
    p = np.asarray(jax.nn.softmax(jnp.asarray(lg), -1))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    # the excluded mass is renormalised over the rest, in proportion
    free = unit_logits(params, hyper, hidden, tables, _no_prev(T))[0]
    pf = np.asarray(jax.nn.softmax(free, -1))
    ok = np.isfinite(lg[1])
    np.testing.assert_allclose(p[1, ok], pf[1, ok] / pf[1, ok].sum(), rtol=1e-4)


def _encoded():
    bt = ByteTokenizer()
    tok = DynamicTokenizer(DynTokSettings(v_base=V, threshold=2, n_slots=S), bt.decode_bytes)
    tok.encode(bt.encode("the cat and the hat, the end. " * 2))
    enc = tok.encode(bt.encode("the cat and the hat"))
    assert (enc.units >= V).sum() >= 3, "fixture text must produce merges"
    return enc


def test_device_masks_match_the_tokenizers_causal_rules(model):
    """-inf exactly where dyntok's numpy twins say: slot not in the table, or excluded by the previous unit."""
    config, params, hyper = model
    bt = ByteTokenizer()
    rng = np.random.default_rng(0)
    tok = DynamicTokenizer(DynTokSettings(v_base=V, window=24, threshold=2, n_slots=S), bt.decode_bytes)
    checked = 0
    for _ in range(12):
        enc = tok.encode(rng.choice(list(b"abcab "), 30).astype(np.int32))
        inputs, targets, tmask = enc.training_pair()
        T = len(targets)
        hidden = jax.random.normal(jax.random.key(checked), (1, T, config.n_embd))
        lg = np.asarray(unit_logits(params, hyper, hidden, SlotTables.of(enc.slots, enc.prior, enc.avail_from),
                                    UnitPositions.of(inputs[None]))[0])
        excl = enc.excluded_next()
        pairs = enc.pairs_at()
        for t in range(T):
            exp_base = np.zeros(V, bool)
            exp_base[list(excl[t])] = True
            np.testing.assert_array_equal(np.isneginf(lg[t, :V]), exp_base)
            exp_virt = ~tmask[t] | np.isin(pairs[t, :, 0], list(excl[t]))
            np.testing.assert_array_equal(np.isneginf(lg[t, V:]), exp_virt)
            assert np.isfinite(lg[t, targets[t]]), "the canonical target is never excluded"
            checked += int(exp_base.any())
    assert checked > 0, "the fixture must exercise the exclusion rule"


def _batch():
    enc = _encoded()
    inputs, targets, _ = enc.training_pair(bos=0)
    return (inputs[None], targets[None], SlotTables.of(enc.slots, enc.prior, enc.avail_from),
            UnitPositions.of(inputs[None]), enc.n_base)


def test_merges_on_gradients_reach_every_hypernet_leaf_and_it_learns(model):
    config, params, hyper0 = model
    inputs, targets, tables, pos, n_bytes = _batch()
    state = rwkvjax.zero_state(config, 1)

    def loss_fn(h):
        return unit_loss(params, h, inputs, targets, state, tables, pos, config=config)

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
    l0, _ = forward_units(params, hyper0, units, state, tables, _no_prev(4), config=config)
    l1, _ = forward_units(params, hyper, units, state, tables, _no_prev(4), config=config)
    assert not np.allclose(np.asarray(l0[:, 1:, :V]), np.asarray(l1[:, 1:, :V]))


def test_strict_bits_are_a_code_length_over_the_merged_stream(model):
    config, params, hyper = model
    inputs, targets, tables, pos, n_bytes = _batch()
    state = rwkvjax.zero_state(config, 1)
    _, (bits, n, _) = unit_loss(params, hyper, inputs, targets, state, tables, pos, config=config)
    logits, _ = forward_units(params, hyper, inputs, state, tables, pos, config=config)
    p = jax.nn.softmax(logits, -1)
    np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, rtol=1e-5)
    ref = -np.log2(np.take_along_axis(np.asarray(p, np.float64), targets[..., None], -1)).sum()
    np.testing.assert_allclose(float(bits), ref, rtol=1e-4)
    assert n == len(targets[0]) < n_bytes  # fewer recurrent steps than bytes
    # padding is excluded
    pad = np.ones_like(targets, bool)
    pad[:, -3:] = False
    _, (bits_p, n_p, _) = unit_loss(params, hyper, inputs, targets, state, tables, pos, pad, config=config)
    assert n_p == n - 3 and float(bits_p) < float(bits)


def _leaves(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {".".join(str(getattr(k, "name", k)) for k in path): v for path, v in flat}


def test_merges_run_on_int8_weights_as_on_the_dequantized_ones(tiny_model, tmp_path):
    """An int8 model (`convert --dtype int8`) reads its embedding and head rows through the same helpers."""
    from rwkvjax.io.convert import save_official
    config, params = tiny_model.arch, tiny_model.params
    save_official(params, config, tmp_path / "q.safetensors", "int8")
    q = rwkvjax.load(tmp_path / "q.safetensors").params
    save_official(q, config, tmp_path / "deq.safetensors", "fp32")
    deq = rwkvjax.load(tmp_path / "deq.safetensors").params
    hyper = init_hypernet(config, jax.random.key(0))
    units = np.frombuffer(TEXT, np.uint8).astype(np.int32).reshape(1, -1)
    units[0, 3] = V + 1  # one merged unit (slot 1: "he")
    state = rwkvjax.zero_state(config, 1)
    out = [forward_units(p, hyper, units, state, _slots(), UnitPositions.of(units), config=config)[0]
           for p in (q, deq)]
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(out[1]), rtol=2e-5, atol=2e-4)
