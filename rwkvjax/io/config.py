"""Settings of the `convert` command (light to import)."""

from __future__ import annotations

import dataclasses

from rwkvjax.options import option


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    src: str = option(positional=True, help="HF repo id, folder, .safetensors, .pth or rwkv.cpp .bin")
    out: str = option(positional=True, help="output .safetensors path")
    dtype: str = option("fp32", choices=("fp32", "bf16", "fp16", "int8"),
                        help="tensor dtype of the output; int8: weight-only, one scale per output row for the "
                             "large matrices (the other tensors fp32)")


@dataclasses.dataclass(frozen=True)
class StateListConfig:
    states: str = option(help="named-states folder")
    json: bool = option(False, help="machine-readable output")


@dataclasses.dataclass(frozen=True)
class StateShowConfig:
    name: str = option(positional=True, help="state name or id")
    states: str = option(help="named-states folder")


@dataclasses.dataclass(frozen=True)
class StateForkConfig:
    src: str = option(positional=True, help="state to copy (name or id)")
    name: str = option(positional=True, help="name of the new state")
    states: str = option(help="named-states folder")
    onto: str | None = option(None, help="the base model the fork is for; refused unless it is the source's own")


@dataclasses.dataclass(frozen=True)
class StateRmConfig:
    name: str = option(positional=True, help="state name or id")
    states: str = option(help="named-states folder")
    recursive: bool = option(False, help="also remove every state forked from it (a state with children is "
                                         "refused without this)")


@dataclasses.dataclass(frozen=True)
class StateExportConfig:
    name: str = option(positional=True, help="state name or id")
    out: str = option(positional=True, help="RWKV-PEFT time_state file: .pth (needs torch) or .safetensors")
    states: str = option(help="named-states folder")
    dtype: str = option("fp32", choices=("fp32", "bf16"), help="tensor dtype of the file")


@dataclasses.dataclass(frozen=True)
class StateImportConfig:
    file: str = option(positional=True, help="RWKV-PEFT time_state file, or a model file with merged time_state")
    name: str = option(help="name of the new state")
    states: str = option(help="named-states folder")
    model: str = option(help="the base model the state is for (its hash and shapes are checked)")
    parent: str | None = option(None, help="record this state (name or id) as its parent")
