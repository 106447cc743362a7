"""Settings of the `generate` command (light to import)."""

from __future__ import annotations

import dataclasses
import math

from rwkvjax.errors import ConfigError
from rwkvjax.options import option
from rwkvjax.train.config import DEFAULT_MODEL


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    prompt: str = option(help="prompt text (backslash escapes such as \\n are read as the characters they name)")
    model: str = option(DEFAULT_MODEL, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    max_tokens: int = option(200, help="tokens to sample at most")
    temperature: float = option(1.0, help="sampling temperature (0: greedy)")
    top_p: float = option(0.85, help="nucleus mass kept, in (0, 1]")
    seed: int = option(0, help="sampling seed")
    dtype: str = option("fp32", choices=("fp32", "bf16"), help="weight dtype")
    checkpoint: str | None = option(None, help="a --ckpt-dir of `train`: start from its tuned state (S0)")

    def __post_init__(self):
        if self.max_tokens <= 0:
            raise ConfigError(f"--max-tokens {self.max_tokens}: must be >= 1")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ConfigError(f"--temperature {self.temperature}: must be finite and >= 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p {self.top_p}: must be in (0, 1]")
