"""Every checkpoint format gives the same parameters; every bad file gives one clear CheckpointError.

The reference is the golden fixture's official-name safetensors (tests/data/golden/tiny.safetensors). The
other formats are written here from the same tensors: a BlinkDL `.pth` (torch), Hugging Face/fla
safetensors by the fla rename/transpose (https://github.com/fla-org/flash-linear-attention) (separate `attn.x_r..x_g` and packed `attn.x_x` [6, C]),
and an HF-style folder (config.json, sharded safetensors, model.safetensors.index.json).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import chex
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import rwkvjax
from rwkvjax import CheckpointError
from rwkvjax.model.params import from_official
from tests.conftest import REPO, RWKVCPP_DIR

GOLDEN_ST = Path(__file__).resolve().parents[1] / "data" / "golden" / "tiny.safetensors"
_LERPS = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")


@pytest.fixture(scope="module")
def official_sd() -> dict[str, np.ndarray]:
    return load_file(str(GOLDEN_ST))


@pytest.fixture(scope="module")
def reference():
    model = rwkvjax.load(GOLDEN_ST)
    return model.arch, model.params


def assert_same_model(got, want):
    """`got`: a loaded Model; `want`: (architecture, params)."""
    (cfg_a, params_a), (cfg_b, params_b) = (got.arch, got.params), want
    assert cfg_a == cfg_b
    chex.assert_trees_all_equal(params_a, params_b)  # exact: every format holds the same float32 values


def to_hf(sd: dict[str, np.ndarray], packed: bool) -> dict[str, np.ndarray]:
    """Official names -> Hugging Face/fla names and layouts (fla's conversion), written independently of the loader."""
    out = {"model.embeddings.weight": sd["emb.weight"], "model.norm.weight": sd["ln_out.weight"],
           "model.norm.bias": sd["ln_out.bias"], "lm_head.weight": sd["head.weight"],
           "model.layers.0.pre_norm.weight": sd["blocks.0.ln0.weight"],
           "model.layers.0.pre_norm.bias": sd["blocks.0.ln0.bias"]}
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(n_layer):
        o, h = f"blocks.{i}.", f"model.layers.{i}."
        renames = {"ln1": "attn_norm", "ln2": "ffn_norm", "att.ln_x": "attn.g_norm"}
        for src, dst in renames.items():
            for wb in ("weight", "bias"):
                out[f"{h}{dst}.{wb}"] = sd[f"{o}{src}.{wb}"]
        for src, dst in (("receptance", "r_proj"), ("key", "k_proj"), ("value", "v_proj"), ("output", "o_proj")):
            out[f"{h}attn.{dst}.weight"] = sd[f"{o}att.{src}.weight"]
        if packed:
            out[f"{h}attn.x_x"] = np.concatenate([sd[f"{o}att.{x}"].reshape(1, -1) for x in _LERPS])
        else:
            out.update({f"{h}attn.{x}": sd[f"{o}att.{x}"] for x in _LERPS})  # stays [1, 1, C]
        out[f"{h}attn.k_k"] = sd[f"{o}att.k_k"].reshape(-1)
        out[f"{h}attn.k_a"] = sd[f"{o}att.k_a"].reshape(-1)
        out[f"{h}attn.r_k"] = sd[f"{o}att.r_k"]
        for lora in ("w", "a", "v", "g"):
            if lora == "v" and i == 0:
                continue  # fla has no value-residual LoRA in layer 0
            out[f"{h}attn.{lora}_lora.lora.0.weight"] = sd[f"{o}att.{lora}1"].T.copy()
            out[f"{h}attn.{lora}_lora.lora.2.weight"] = sd[f"{o}att.{lora}2"].T.copy()
            if lora != "g":
                out[f"{h}attn.{lora}_lora.lora.2.bias"] = sd[f"{o}att.{lora}0"].reshape(-1)
        out[f"{h}ffn.x_k"] = sd[f"{o}ffn.x_k"].reshape(-1)
        out[f"{h}ffn.key.weight"] = sd[f"{o}ffn.key.weight"]
        out[f"{h}ffn.value.weight"] = sd[f"{o}ffn.value.weight"]
    return out


def without_layer0_v(sd):
    """Layer 0's v0/v1/v2 are unused; formats without them must load to the same params."""
    return {k: v for k, v in sd.items() if not re.fullmatch(r"blocks\.0\.att\.v[012]", k)}


# --- every format, same parameters ------------------------------------------------------------------------

def test_pth_equals_safetensors(tmp_path, official_sd, reference):
    torch = pytest.importorskip("torch", reason="reading BlinkDL .pth files needs torch (the [reference] extra)")
    path = tmp_path / "tiny.pth"
    torch.save({k: torch.from_numpy(v) for k, v in official_sd.items()}, path)
    assert_same_model(rwkvjax.load(path), reference)


def test_bf16_pth_and_bf16_hf_safetensors_agree(tmp_path, official_sd):
    """Released weights are bf16: both readers must widen them to the same float32 values."""
    torch = pytest.importorskip("torch", reason="reading BlinkDL .pth files needs torch (the [reference] extra)")
    sd16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in official_sd.items()}
    torch.save({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in official_sd.items()}, tmp_path / "m.pth")
    save_file(to_hf(sd16, packed=False), str(tmp_path / "hf.safetensors"))
    want = from_official({k: v.astype(np.float32) for k, v in sd16.items()})
    assert_same_model(rwkvjax.load(tmp_path / "m.pth"), want)
    assert_same_model(rwkvjax.load(tmp_path / "hf.safetensors"), want)


@pytest.mark.parametrize("packed", [False, True], ids=["separate-x_r..x_g", "packed-x_x"])
def test_hf_safetensors_equal_official(tmp_path, official_sd, reference, packed):
    hf = to_hf(official_sd, packed)
    assert not any(k.startswith("blocks.") for k in hf)
    save_file(hf, str(tmp_path / "model.safetensors"))
    assert_same_model(rwkvjax.load(tmp_path / "model.safetensors"), reference)


def test_official_names_without_layer0_v_lora(tmp_path, official_sd, reference):
    save_file(without_layer0_v(official_sd), str(tmp_path / "m.safetensors"))
    assert_same_model(rwkvjax.load(tmp_path / "m.safetensors"), reference)


def write_hf_folder(folder: Path, sd: dict[str, np.ndarray], cfg: rwkvjax.Architecture, n_shards: int = 2) -> None:
    folder.mkdir()
    hf = to_hf(sd, packed=False)
    names = sorted(hf)
    weight_map = {}
    for s in range(n_shards):
        shard = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = names[s::n_shards]
        save_file({k: hf[k] for k in part}, str(folder / shard))
        weight_map.update({k: shard for k in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": sum(v.nbytes for v in hf.values())}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "rwkv7", "architectures": ["RWKV7ForCausalLM"], "hidden_size": cfg.n_embd,
        "num_hidden_layers": cfg.n_layer, "head_dim": cfg.head_size, "decay_low_rank_dim": cfg.d_decay,
        "a_low_rank_dim": cfg.d_aaa, "v_low_rank_dim": cfg.d_mv, "gate_low_rank_dim": cfg.d_gate,
        "intermediate_size": cfg.dim_ffn, "vocab_size": cfg.vocab_size, "norm_eps": 1e-5,
        "torch_dtype": "float32"}))


def test_hf_folder_with_sharded_safetensors(tmp_path, official_sd, reference):
    write_hf_folder(tmp_path / "hf", official_sd, reference[0])
    assert len(list((tmp_path / "hf").glob("*.safetensors"))) == 2
    assert_same_model(rwkvjax.load(tmp_path / "hf"), reference)


def test_rwkvcpp_fp16_close_to_fp32():
    """Both rwkv.cpp files describe one model; FP16 rounding (2^-11 relative) bounds their difference."""
    loaded = rwkvjax.load(RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin")
    cfg32, p32 = loaded.arch, loaded.params
    loaded = rwkvjax.load(RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP16.bin")
    cfg16, p16 = loaded.arch, loaded.params
    assert cfg32 == cfg16
    chex.assert_trees_all_close(p16, p32, rtol=2 ** -11, atol=2 ** -24)


# --- bad files: one CheckpointError naming the file (and the tensor), nothing returned ----------------------

def load_error(path) -> str:
    result = None
    with pytest.raises(CheckpointError) as err:
        result = rwkvjax.load(path)
    assert result is None
    msg = str(err.value)
    assert str(path) in msg, msg
    return msg


def test_random_bytes_and_text_file_are_rejected(tmp_path):
    (tmp_path / "noise.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "notes.pth").write_text("this is a text file, not a model\n" * 20)
    for name in ("noise.safetensors", "notes.pth"):
        assert "unrecognised format" in load_error(tmp_path / name)


def test_truncated_rwkvcpp_bin_names_the_tensor(tmp_path):
    data = (RWKVCPP_DIR / "tiny-rwkv-7v0-834K-FP32.bin").read_bytes()
    path = tmp_path / "cut.bin"
    path.write_bytes(data[: len(data) // 2])
    assert re.search(r"tensor 'blocks\.\d+\.[\w.]+' is truncated", load_error(path))


def test_truncated_safetensors_names_the_tensor(tmp_path):
    data = GOLDEN_ST.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    assert re.search(r"tensor '[\w.]+' is truncated", load_error(path))


def test_truncated_shard_in_hf_folder(tmp_path, official_sd, reference):
    folder = tmp_path / "hf"
    write_hf_folder(folder, official_sd, reference[0])
    shard = sorted(folder.glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    assert re.search(r"tensor '[\w.]+' is truncated", _folder_error(folder, shard))


def _folder_error(folder: Path, shard: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        rwkvjax.load(folder)
    msg = str(err.value)
    assert str(shard) in msg, msg
    return msg


def test_missing_shard_in_hf_folder(tmp_path, official_sd, reference):
    folder = tmp_path / "hf"
    write_hf_folder(folder, official_sd, reference[0])
    shard = sorted(folder.glob("*.safetensors"))[0]
    shard.unlink()
    assert "missing" in _folder_error(folder, shard)


def _save_variant(tmp_path, sd) -> Path:
    path = tmp_path / "variant.safetensors"
    save_file(sd, str(path))
    return path


def test_deepembed_variant_is_rejected(tmp_path, official_sd):
    sd = dict(official_sd)
    sd["blocks.0.ffn.s_emb.weight"] = np.zeros((384, 1024), np.float32)
    msg = load_error(_save_variant(tmp_path, sd))
    assert "'blocks.0.ffn.s_emb.weight'" in msg and "DeepEmbed" in msg


def test_unknown_extra_tensor_is_rejected_not_dropped(tmp_path, official_sd):
    sd = dict(official_sd)
    sd["blocks.1.att.x_extra"] = np.zeros((1, 1, 128), np.float32)
    assert "'blocks.1.att.x_extra'" in load_error(_save_variant(tmp_path, sd))


def test_missing_tensor_is_named(tmp_path, official_sd):
    sd = {k: v for k, v in official_sd.items() if k != "blocks.1.att.key.weight"}
    msg = load_error(_save_variant(tmp_path, sd))
    assert "'blocks.1.att.key.weight'" in msg and "missing" in msg


@pytest.mark.parametrize("name", ["blocks.2.ffn.value.weight", "blocks.1.att.g2", "head.weight", "blocks.0.att.x_k"])
def test_mismatched_shape_is_named(tmp_path, official_sd, name):
    sd = dict(official_sd)
    sd[name] = np.zeros(tuple(d + 1 for d in sd[name].shape), np.float32)
    msg = load_error(_save_variant(tmp_path, sd))
    assert f"'{name}'" in msg and "shape" in msg


def test_hf_packed_x_x_with_wrong_rows_is_named(tmp_path, official_sd):
    hf = to_hf(official_sd, packed=True)
    hf["model.layers.1.attn.x_x"] = hf["model.layers.1.attn.x_x"][:5]
    assert "'model.layers.1.attn.x_x'" in load_error(_save_variant(tmp_path, hf))


# --- Hugging Face Hub, offline ------------------------------------------------------------------------------

def test_hub_offline_gives_hub_error_without_network(tmp_path):
    """huggingface_hub reads HF_HUB_OFFLINE at import, so the check runs in a fresh interpreter."""
    code = ("import rwkvjax\n"
            "from rwkvjax.io.hub import HubError\n"
            "try:\n    rwkvjax.load('some-org/some-rwkv7-model')\n"
            "except HubError as e:\n    print('HUBERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    line = run.stdout.strip().splitlines()[-1]
    assert line.startswith("HUBERROR some-org/some-rwkv7-model:"), run.stdout
    assert "offline" in line and "local file or folder" in line
