"""The model's architecture (its sizes), inferred from tensor shapes (never from file names). Named
Architecture, not Config, so it cannot be confused with the run settings (`TrainConfig`, `ServeConfig`, ...)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Architecture:
    """RWKV-7 x070 dimensions. Hashable, so it can be a static jit argument."""

    vocab_size: int
    n_embd: int
    n_layer: int
    dim_ffn: int
    d_decay: int
    d_aaa: int
    d_mv: int
    d_gate: int
    head_size: int = 64

    def __post_init__(self):
        if self.n_embd % self.head_size:
            raise ValueError(
                f"n_embd={self.n_embd} is not a multiple of head_size={self.head_size}"
            )

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    def n_params(self) -> int:
        C, F, L, V = self.n_embd, self.dim_ffn, self.n_layer, self.vocab_size
        lora = self.d_decay + self.d_aaa + self.d_mv + self.d_gate
        per_layer = 4 * C * C + 2 * C * F + 2 * C * lora + 19 * C
        return L * per_layer + 2 * V * C + 4 * C


# Shapes of released models (the configs of BlinkDL's RWKV-7 World releases, https://huggingface.co/BlinkDL/rwkv-7-world);
# used for full-size shape tests.
PRESETS: dict[str, Architecture] = {
    "0.1B": Architecture(65536, 768, 12, 3072, 64, 64, 32, 128),
    "0.4B": Architecture(65536, 1024, 24, 4096, 64, 64, 32, 128),
    "1.5B": Architecture(65536, 2048, 24, 8192, 96, 96, 64, 256),
    "2.9B": Architecture(65536, 2560, 32, 10240, 96, 96, 64, 320),
}
