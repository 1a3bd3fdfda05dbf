"""The frozen experts of a MoT: loaded in-process with transformers, never modified.

A packaged GGUF is dequantised once into ``STATE_DIR/mot/<name>/`` (``~/.cache/coe/mot``) as a
Hugging Face model directory (safetensors + tokenizer); later loads read that directory. Every
parameter has ``requires_grad`` off and the model stays in eval mode.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coe.errors import ConfigError
from coe.experts.models import resolve_model
from coe.experts.prompting import render_prompt
from coe.mot.config import MotExpertSpec
from coe.types import Messages

log = logging.getLogger("coe.mot")

LETTERS = "ABCDEFGHIJ"


def cache_root() -> Path:
    """``$COE_MOT_CACHE`` or ``~/.cache/coe/mot``."""
    return Path(os.environ.get("COE_MOT_CACHE") or "~/.cache/coe/mot").expanduser()


def model_dir(spec: MotExpertSpec, models_cache: Path) -> Path:
    """A HF model directory for ``spec.model``: given as one, or dequantised from its GGUF once."""
    given = Path(spec.model).expanduser()
    if given.is_dir():
        return given
    target = cache_root() / spec.name
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    gguf = Path(resolve_model(spec.model, models_cache))
    if gguf.suffix != ".gguf":
        raise ConfigError(f"MoT expert {spec.name}: {spec.model!r} is neither a GGUF nor a model directory")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("MoT expert %s: dequantising %s into %s (once)", spec.name, gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    target.mkdir(parents=True, exist_ok=True)
    # the weights are plain float32 tensors now; only the GGUF marker keeps them from saving
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / ".complete").touch()
    return target


@dataclass
class FrozenExpert:
    """One expert: its model and tokenizer, where it interacts, and how it reads a conversation."""

    spec: MotExpertSpec
    model: Any
    tokenizer: Any

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def layers(self) -> Any:
        return self.model.model.layers

    def prompt_ids(self, messages: Messages) -> list[int]:
        """The conversation as this expert's prompt tokens, ready for the answer to follow."""
        if self.spec.format == "chat":
            ids = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        text = render_prompt(messages, self.spec.prompt_template)
        return [int(i) for i in self.tokenizer(text).input_ids]

    def text_ids(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False).input_ids]

    @property
    def eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        end = self.tokenizer.convert_tokens_to_ids("<end_of_turn>")
        if isinstance(end, int) and end != self.tokenizer.unk_token_id:
            ids.add(end)
        return {int(i) for i in ids if i is not None}


def load_expert(spec: MotExpertSpec, models_cache: Path) -> FrozenExpert:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = model_dir(spec, models_cache)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]
    model.requires_grad_(False)
    layers = int(model.config.num_hidden_layers)
    if spec.points[-1] > layers or min(spec.points) < 1 or list(spec.points) != sorted(set(spec.points)):
        raise ConfigError(
            f"MoT expert {spec.name}: points {list(spec.points)} do not fit its {layers} layers"
        )
    return FrozenExpert(spec, model, tokenizer)
