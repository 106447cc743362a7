"""Read RWKV-7 checkpoints in every supported format into official-name tensors, then `Params`.

Formats are recognised by content (magic bytes), never by file name:
rwkv.cpp ggml v101 (`fmgg`), BlinkDL `.pth` (torch zip), safetensors with official or HF/fla names,
a local HF-format folder, or a Hugging Face repo id (downloaded through huggingface_hub).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from rwkvjax.errors import CheckpointError
from rwkvjax.model.params import from_official
from rwkvjax.model.quant import MARKER, MARKER_KEY, SCALE_SUFFIX
from rwkvjax.model.value import Model, weight_dtype
from rwkvjax.text.tokenizer import for_model

RWKVCPP_MAGIC = 0x67676D66
RWKVCPP_VERSION = 101
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_TIME_STATE_NAME = re.compile(r"^blocks\.(\d+)\.att\.time_state$")  # RWKV-PEFT's name for a layer's S0


def load(source: str | os.PathLike, dtype: str = "fp32", *, revision: str | None = None,
         cache_dir: str | None = None) -> Model:
    """Load a model from a file, a folder or a Hugging Face repo id -> `Model` (architecture, weights, tokenizer,
    content hash, and the start state the file ships with when it holds merged `time_state` tensors).

    `dtype`: the weight dtype, one of `model.value.DTYPES` ("fp32", "bf16", "fp16", or "int8" to quantize the
    large matrices on load, `rwkvjax.model.quant`). An int8 file (`cli.py convert --dtype int8`) loads quantized
    whatever `dtype` is (its other tensors in `dtype`).
    """
    jdtype = weight_dtype(dtype)
    sd, where = read_official(source, revision=revision, cache_dir=cache_dir)
    check_finite(sd, where)
    start = split_time_state(sd, where) if "emb.weight" in sd else None
    arch, params = from_official(sd, dtype=jdtype, source=where)
    stored_int8 = any(k.endswith(SCALE_SUFFIX) for k in sd)
    return Model(arch, params, for_model(arch.vocab_size), dtype="int8" if stored_int8 else dtype, source=where,
                 start_wkv_LHNN=start)


def split_time_state(tensors: dict[str, np.ndarray], path, expect_LHNN: tuple[int, ...] | None = None
                     ) -> np.ndarray | None:
    """Take the `blocks.{i}.att.time_state` tensors out of `tensors` (a state file, or a model file that
    ships its start state) as S0 [L,H,N,N] float32; None when there are none. Refuses an incomplete set, and
    with `expect_LHNN` one that does not fit that shape, before stacking anything."""
    layers = {int(m.group(1)): tensors.pop(k) for k in list(tensors) if (m := _TIME_STATE_NAME.match(k))}
    if not layers:
        return None
    L = check_time_state_layers({i: np.shape(v) for i, v in layers.items()}, path, expect_LHNN)[0]
    wkv = np.stack([np.asarray(layers[i], np.float32) for i in range(L)])
    if not np.isfinite(wkv).all():
        bad = next(i for i in range(L) if not np.isfinite(wkv[i]).all())
        raise CheckpointError(f"{path}: 'blocks.{bad}.att.time_state' holds non-finite values")
    return wkv


TIME_STATE_LISTED = 8  # at most this many layers or shapes named in one error message


def time_state_layer(name: str) -> int | None:
    """The layer index of an RWKV-PEFT `blocks.{i}.att.time_state` tensor name, else None."""
    m = _TIME_STATE_NAME.match(name)
    return int(m.group(1)) if m else None


def check_time_state_layers(shapes: dict[int, tuple[int, ...]], path, expect_LHNN: tuple[int, ...] | None = None
                            ) -> tuple[int, int, int, int]:
    """The [L, H, N, N] that per-layer time_state shapes {layer: shape} make, refusing a set that is not layers
    0..L-1 of one [H, N, N] shape (or not `expect_LHNN`). Works on shapes alone, in time and memory of the number
    of tensors (never of a layer index a file claims), so a file is refused before anything is read from it."""
    def listed(items) -> str:
        items = list(items)
        more = f" and {len(items) - TIME_STATE_LISTED} more" if len(items) > TIME_STATE_LISTED else ""
        return ", ".join(map(str, items[:TIME_STATE_LISTED])) + more

    L = max(shapes) + 1
    n_missing = L - len(shapes)  # every index is below L here
    if n_missing:
        first = list(itertools.islice((i for i in range(L) if i not in shapes), TIME_STATE_LISTED))
        more = f" and {n_missing - len(first)} more" if n_missing > len(first) else ""
        raise CheckpointError(f"{path}: time_state of layer(s) {', '.join(map(str, first))}{more} missing "
                              f"(layers 0..{L - 1} expected)")
    found = sorted({tuple(int(d) for d in s) for s in shapes.values()})
    if len(found) != 1 or len(found[0]) != 3 or found[0][1] != found[0][2]:
        raise CheckpointError(f"{path}: time_state tensors must all be [H, N, N]; found shapes {listed(found)}")
    LHNN = (L, *found[0])
    if expect_LHNN is not None and LHNN != tuple(expect_LHNN):
        raise CheckpointError(f"{path}: time_state has shape {LHNN}, the model needs {tuple(expect_LHNN)}")
    return LHNN


def check_finite(sd: dict[str, np.ndarray], where: str) -> None:
    """Refuse weights holding NaN or Inf, naming the tensor: they would only show up later as `nan` scores,
    empty generations or a failing trainer."""
    for name, a in sd.items():
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise CheckpointError(f"{where}: tensor {name} holds {bad} NaN/Inf value{'s' * (bad > 1)} (of {a.size}); "
                                  "the file is damaged or its training diverged: use another checkpoint")


def read_official(source, *, revision=None, cache_dir=None) -> tuple[dict[str, np.ndarray], str]:
    path = Path(source)
    if path.is_dir():
        return _read_folder(path), str(path)
    if path.is_file():
        return read_file(path), str(path)
    if _looks_like_repo_id(str(source)):
        from rwkvjax.io.hub import download_model
        return _read_folder(download_model(str(source), revision=revision, cache_dir=cache_dir)), str(source)
    raise CheckpointError(
        f"{source}: no such file or folder, and not a Hugging Face repo id of the form 'org/name'")


def _looks_like_repo_id(s: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", s)) and not s.startswith((".", "/"))


def read_file(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 4 and struct.unpack("<I", head[:4])[0] == RWKVCPP_MAGIC:
        return read_rwkvcpp(path)
    if head[:2] == b"PK":
        return read_pth(path)
    if len(head) >= 9 and head[8:9] == b"{":
        return to_official_names(read_safetensors(path), str(path))
    raise CheckpointError(
        f"{path}: unrecognised format (expected safetensors, a BlinkDL .pth zip, or an rwkv.cpp v101 .bin)")


def _read_folder(folder: Path) -> dict[str, np.ndarray]:
    index = folder / _SAFETENSORS_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / s for s in shards]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors files (and no {_SAFETENSORS_INDEX}) in this folder")
    sd: dict[str, np.ndarray] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in {index.name} but missing")
        sd.update(read_safetensors(f))
    return to_official_names(sd, str(folder))


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open
    try:
        # framework="numpy" cannot represent bf16 (the usual dtype of released weights); "flax" can,
        # and one tensor at a time goes through jax before becoming a float32 (or int8) numpy array.
        with safe_open(str(path), framework="flax") as f:
            sd = {k: _to_np32(f.get_tensor(k)) for k in f.keys()}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {_safetensors_problem(path) or 'not a readable safetensors file'} ({e})"
                              ) from None
    int8 = [k for k, v in sd.items() if v.dtype == np.int8]
    if int8 and metadata.get(MARKER_KEY) != MARKER:
        raise CheckpointError(f"{path}: tensor '{int8[0]}' is int8 but the file lacks the metadata "
                              f"'{MARKER_KEY}: {MARKER}' of rwkvjax's int8 files (per-row scales); "
                              "write quantized files with `cli.py convert --dtype int8`")
    return sd


def _safetensors_problem(path: Path) -> str | None:
    """Name the first tensor whose bytes lie past the end of a truncated safetensors file."""
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        have = os.path.getsize(path) - 8 - n
        spans = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    for (start, end), name in spans:
        if end > have:
            return f"tensor '{name}' is truncated ({max(have - start, 0)} of {end - start} bytes present)"
    return None


def _to_np32(a) -> np.ndarray:
    """float32, except int8 (quantized weights, `rwkvjax.model.quant`), which stays int8."""
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.int8) else a.astype(np.float32)


# --- rwkv.cpp ggml (format version 101) -----------------------------------------------------------

_GGML_DTYPES = {0: np.float32, 1: np.float16}
_RWKVCPP_TRANSPOSED = re.compile(r"\.att\.(w1|w2|a1|a2|v1|v2|g1|g2)$")
_LERP_ORDER = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")


def read_rwkvcpp(path: Path) -> dict[str, np.ndarray]:
    """rwkv.cpp `.bin` -> official tensors (undoes x_rwkvag packing and the transposed LoRAs)."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise CheckpointError(f"{path}: truncated rwkv.cpp header ({len(data)} bytes)")
    magic, version, n_vocab, n_embd, n_layer, _ = struct.unpack_from("<6i", data, 0)
    if magic != RWKVCPP_MAGIC:
        raise CheckpointError(f"{path}: not an rwkv.cpp file (magic {magic:#x})")
    if version != RWKVCPP_VERSION:
        raise CheckpointError(f"{path}: rwkv.cpp format version {version}; only {RWKVCPP_VERSION} (RWKV-7) is supported")
    off, sd = 24, {}
    while off < len(data):
        if off + 12 > len(data):
            raise CheckpointError(f"{path}: truncated tensor header at byte {off}")
        n_dims, key_len, dt = struct.unpack_from("<3i", data, off)
        off += 12
        if dt not in _GGML_DTYPES or not 0 < n_dims <= 4 or not 0 < key_len < 1024:
            raise CheckpointError(f"{path}: corrupt tensor header at byte {off - 12} "
                                  f"(dims={n_dims}, key_len={key_len}, dtype={dt})")
        shape = struct.unpack_from(f"<{n_dims}i", data, off)[::-1]
        off += 4 * n_dims
        key = data[off:off + key_len].decode("utf-8", errors="replace")
        off += key_len
        nbytes = int(np.prod(shape)) * np.dtype(_GGML_DTYPES[dt]).itemsize
        if off + nbytes > len(data):
            raise CheckpointError(f"{path}: tensor '{key}' is truncated ({len(data) - off} of {nbytes} bytes)")
        arr = np.frombuffer(data, _GGML_DTYPES[dt], int(np.prod(shape)), off).reshape(shape).astype(np.float32)
        off += nbytes
        if key.endswith(".att.x_rwkvag"):
            base = key[: -len("x_rwkvag")]
            for name, row in zip(_LERP_ORDER, arr.reshape(6, -1)):
                sd[base + name] = row.reshape(1, 1, -1)
        else:
            sd[key] = arr.T.copy() if _RWKVCPP_TRANSPOSED.search(key) else arr
    if "emb.weight" in sd and sd["emb.weight"].shape != (n_vocab, n_embd):
        raise CheckpointError(f"{path}: tensor 'emb.weight' has shape {sd['emb.weight'].shape}, "
                              f"header says ({n_vocab}, {n_embd})")
    return sd


# --- BlinkDL .pth ---------------------------------------------------------------------------------

def read_pth(path: Path) -> dict[str, np.ndarray]:
    """BlinkDL `.pth` (torch zip pickle). torch is needed here only: `pip install rwkvjax[reference]`."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading a .pth file needs torch; install it with "
                              "`pip install -e '.[reference]'`, or convert the file elsewhere with "
                              "`python cli.py convert`") from None
    import pickle
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # weights_only refused a global: the file asks to run code or build objects
        raise CheckpointError(f"{path}: the file holds code or Python objects besides tensors and is refused "
                              "(nothing in it was run); a checkpoint needs tensors only") from None
    except Exception as e:  # torch raises many types for bad zips/pickles
        raise CheckpointError(f"{path}: not a loadable .pth checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: .pth holds a {type(sd).__name__}, not a state dict")
    return {k: v.float().numpy() for k, v in sd.items()}


# --- Hugging Face / fla names -----------------------------------------------------------------------

def to_official_names(sd: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Accept official names unchanged; map HF/fla names (separate x_* or packed attn.x_x)."""
    if "emb.weight" in sd or not any(k.startswith("model.") for k in sd):
        return sd
    out: dict[str, np.ndarray] = {}
    for key, arr in sd.items():
        name = _hf_name(key, arr, out, source)
        if name is not None:
            out[name] = arr
    return out


def _hf_name(key: str, arr: np.ndarray, out: dict, source: str) -> str | None:
    top = {"model.embeddings.weight": "emb.weight", "model.norm.weight": "ln_out.weight",
           "model.norm.bias": "ln_out.bias", "lm_head.weight": "head.weight"}
    if key in top:
        return top[key]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
    if not m:
        raise CheckpointError(f"{source}: unexpected tensor '{key}' in an HF-format RWKV-7 checkpoint")
    i, rest = m.group(1), m.group(2)
    simple = {"pre_norm.weight": "ln0.weight", "pre_norm.bias": "ln0.bias",
              "attn_norm.weight": "ln1.weight", "attn_norm.bias": "ln1.bias",
              "ffn_norm.weight": "ln2.weight", "ffn_norm.bias": "ln2.bias",
              "attn.r_proj.weight": "att.receptance.weight", "attn.k_proj.weight": "att.key.weight",
              "attn.v_proj.weight": "att.value.weight", "attn.o_proj.weight": "att.output.weight",
              "attn.g_norm.weight": "att.ln_x.weight", "attn.g_norm.bias": "att.ln_x.bias",
              "attn.k_k": "att.k_k", "attn.k_a": "att.k_a", "attn.r_k": "att.r_k",
              "ffn.x_k": "ffn.x_k", "ffn.key.weight": "ffn.key.weight", "ffn.value.weight": "ffn.value.weight"}
    if rest in simple:
        return f"blocks.{i}.{simple[rest]}"
    if m2 := re.fullmatch(r"attn\.x_([rwkvag])", rest):
        return f"blocks.{i}.att.x_{m2.group(1)}"
    if rest == "attn.x_x":  # packed variant (fla 2025-01..04): rows r, w, k, v, a, g
        if arr.shape[0] != 6:
            raise CheckpointError(f"{source}: tensor '{key}' has shape {arr.shape}, expected (6, C)")
        for name, row in zip(_LERP_ORDER, arr.reshape(6, -1)):
            out[f"blocks.{i}.att.{name}"] = row
        return None
    if m2 := re.fullmatch(r"attn\.([wavg])_lora\.lora\.(0\.weight|2\.weight|2\.bias)", rest):
        kind, part = m2.groups()
        if part == "2.bias":
            return f"blocks.{i}.att.{kind}0"
        out[f"blocks.{i}.att.{kind}{'1' if part == '0.weight' else '2'}"] = arr.T
        return None
    raise CheckpointError(f"{source}: unexpected tensor '{key}' in an HF-format RWKV-7 checkpoint")
