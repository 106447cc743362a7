"""How long `serve`'s warmup (compiling every decode batch size and prefill piece) will take, said before it starts.

The figure is the one recorded the last time the same shapes were compiled on this backend (a small JSON file in
the user's cache folder), else an estimate: the 83 s issue 25 measured between the old "serving" line and the port
accepting, for the 1.5B model (24 layers) with the default settings on a 2-core CPU (the model's loading is in it, so
it errs long), scaled by the number of shapes and of layers (the decode step is one compiled program per shape whose
size grows with the layers; the width of a layer changes the time little).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# The reference measurement (issue 25): `serve` of the 1.5B model with the default settings on a 2-core CPU.
REFERENCE_S, REFERENCE_LAYERS = 83.0, 24
REFERENCE_SHAPES = 9 + 7 + 1  # prefill pieces 1..256, decode batches 1..64, one speculative verification


def shape_count(max_batch: int, prefill_chunk: int, verify: bool) -> int:
    """Programs the warmup compiles: prefill pieces 1, 2, 4 .. prefill_chunk; decode batches 1, 2, 4 .. max_batch
    (the last one max_batch itself); one verification shape with speculative decoding."""
    pieces = prefill_chunk.bit_length()
    batches, b = 1, 1
    while b < max_batch:
        b, batches = min(2 * b, max_batch), batches + 1
    return pieces + batches + int(verify)


def key(backend: str, arch, dtype: str, max_batch: int, prefill_chunk: int, verify: bool) -> str:
    """What the compile time depends on: the backend, the model's shapes, the dtype and the compiled sizes."""
    return json.dumps([backend, dataclasses.astuple(arch), dtype, max_batch, prefill_chunk, verify])


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rwkvjax" / "compile_times.json"


def _records(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: the estimate stands in
        return {}
    return data if isinstance(data, dict) else {}


def expected(k: str, n_layer: int, shapes: int, path: Path | None = None) -> tuple[float, str]:
    """(seconds, where the figure comes from) for compiling the shapes of key `k`."""
    got = _records(path or cache_file()).get(k)
    if isinstance(got, (int, float)) and got > 0:
        return float(got), "as the last start with these settings"
    return (REFERENCE_S * shapes / REFERENCE_SHAPES * n_layer / REFERENCE_LAYERS,
            "estimated from the model's layers and the compiled sizes")


def record(k: str, seconds: float, path: Path | None = None) -> None:
    """Keep the measured time for the next start's announcement. A failure to write is not the server's: one
    debug line, and the next start estimates again."""
    from rwkvjax.atomic import atomic_write, ensure_folder
    path = path or cache_file()
    data = _records(path)
    data[k] = round(seconds, 1)
    try:
        ensure_folder(path.parent)
        atomic_write(path, json.dumps(data, indent=0).encode(), private=False)
    except Exception:
        log.debug("could not record the compile time in %s", path, exc_info=True)
