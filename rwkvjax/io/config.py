"""Settings of the `convert` command (light to import)."""

from __future__ import annotations

import dataclasses

from rwkvjax.options import option


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    src: str = option(positional=True, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    out: str = option(positional=True, help="output .safetensors path")
    dtype: str = option("fp32", choices=("fp32", "bf16", "fp16"), help="tensor dtype of the output")
