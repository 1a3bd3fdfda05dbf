"""The GPU deployment: docker-compose.yml validates, config/experts.gpu.yaml names its servers, and
``coe serve`` boots on config/coe.gpu.yaml and answers through stand-ins for the vLLM servers.

No Docker engine runs here: ``docker-compose config`` (Debian's docker-compose, which ``make test``
installs) only validates. The stand-ins are real llama.cpp servers serving a small model under
each vLLM service's ``--served-model-name``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
import yaml
from conftest import MODEL_CACHE, REPO, clean_env, descendants, stop_server

from coe.config import Settings, load_experts
from coe.experts.launch import LlamaCppServer, free_port
from coe.experts.models import resolve_model

COMPOSE = REPO / "docker-compose.yml"
GPU_CONFIG = REPO / "config" / "coe.gpu.yaml"
#: Where the copy of the GPU config differs: paths only (they name places inside the image).
PATHS = {"experts_file", "graphs_dir", "state_dir"}
#: the API key the deployment is given (``COE_API_KEYS``), here as in docker-compose.yml
KEY = "deploy-test-key"


def options(argv: list[str]) -> dict[str, str]:
    """``--key=value`` arguments of a command as {key: value}."""
    return dict(arg.removeprefix("--").split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose["services"]  # type: ignore[no-any-return]


def test_compose_file_validates() -> None:
    assert shutil.which("docker-compose"), "docker-compose is missing: `make test` installs it (apt)"
    done = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO, capture_output=True, text=True, env={**clean_env(), "COE_API_KEYS": KEY}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_compose_requires_api_keys() -> None:
    """The API listens on 0.0.0.0: docker-compose refuses to start it without keys."""
    done = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO, capture_output=True, text=True, env=clean_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "set COE_API_KEYS" in done.stderr


def test_gpu_experts_are_compose_services(services: dict[str, Any]) -> None:
    settings = Settings.load(GPU_CONFIG)
    assert settings.redis_url == "redis://redis:6379/0"
    experts = load_experts(settings.experts_file)
    assert experts
    for expert in experts:
        assert expert.endpoint is not None and not expert.launched, expert.name
        url = urlsplit(expert.endpoint)
        assert url.hostname in services, f"{expert.name}: no service {url.hostname!r}"
        service = services[url.hostname]
        args = options(service["command"])
        # coe asks the server for the model named like the expert.
        assert args["served-model-name"] == expert.name
        assert args["model"] == expert.model
        assert int(args["port"]) == url.port
        assert int(args["max-model-len"]) == expert.context_size
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia"


def test_api_and_worker_use_the_gpu_config(services: dict[str, Any]) -> None:
    in_image = "/app/" + str(GPU_CONFIG.relative_to(REPO))
    for name in ("api", "worker"):
        service = services[name]
        assert service["command"][:2] == ["coe", "serve" if name == "api" else "worker"]
        assert service["command"][service["command"].index("--config") + 1] == in_image
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert services["api"]["environment"]["COE_API_KEYS"] == "${COE_API_KEYS:?set COE_API_KEYS}"
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--appendfsync") + 1] == "always"


# --- coe serve on the GPU config -------------------------------------------------------------------


def gpu_copy(folder: Path, endpoints: dict[str, str]) -> Path:
    """config/coe.gpu.yaml with its paths pointing here, over config/experts.gpu.yaml with each
    expert's endpoint (a compose hostname) replaced by its stand-in's URL; nothing else changes."""
    settings = yaml.safe_load(GPU_CONFIG.read_text())
    experts = yaml.safe_load((GPU_CONFIG.parent / settings["experts_file"]).read_text())
    for expert in experts["experts"]:
        assert urlsplit(expert["endpoint"]).hostname.startswith("vllm-"), expert
        expert["endpoint"] = endpoints[expert["name"]]
    (folder / "experts.gpu.yaml").write_text(yaml.safe_dump(experts, sort_keys=False))
    adapted = {
        **settings,
        "experts_file": str(folder / "experts.gpu.yaml"),
        "graphs_dir": str(REPO / "graphs"),
        "state_dir": str(folder / "state"),
    }
    assert {k for k in adapted if adapted[k] != settings.get(k)} == PATHS
    path = folder / "coe.gpu.yaml"
    path.write_text(yaml.safe_dump(adapted, sort_keys=False))
    return path


@pytest_asyncio.fixture
async def standins(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """A llama.cpp server per GPU expert, serving the small model under the expert's name."""
    model = resolve_model(load_experts(REPO / "config" / "experts.yaml")[0].model, MODEL_CACHE)
    names = [e.name for e in load_experts(Settings.load(GPU_CONFIG).experts_file)]
    servers = [LlamaCppServer(n, model, log_dir=tmp_path, context_size=1024, parallel=1) for n in names]
    try:
        urls = await asyncio.gather(*(s.start() for s in servers))
        yield dict(zip(names, urls, strict=True))
    finally:
        await asyncio.gather(*(s.stop() for s in servers))


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"coe serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"coe serve not healthy after {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


def test_serve_boots_on_the_gpu_config(tmp_path: Path, standins: dict[str, str], redis_server: str) -> None:
    """The graphs whose trained routers know none of the GPU experts are skipped with a reason; the
    others answer through the three "vLLM" servers."""
    config = gpu_copy(tmp_path, standins)
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            # on the config's host, 0.0.0.0, as in the container: allowed because a key is set
            [sys.executable, "-m", "coe", "serve", "--config", str(config), "--port", url.rsplit(":", 1)[1]],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**clean_env(), "REDIS_URL": redis_server, "COE_API_KEYS": KEY},  # as docker-compose.yml
        )  # fmt: skip
    auth = {"authorization": f"Bearer {KEY}"}
    try:
        wait_healthy(proc, url, log)
        assert httpx.get(url + "/v1/models").status_code == 401
        served = [m["id"] for m in httpx.get(url + "/v1/models", headers=auth).json()["data"]]
        question = [{"role": "user", "content": "What is 2 + 2?"}]
        body = {"model": "vote", "messages": question, "max_tokens": 16}
        response = httpx.post(url + "/v1/chat/completions", json=body, headers=auth, timeout=120)
    finally:
        stop_server(proc, descendants(proc.pid), log)
    assert "auth: on (1 key)" in log.read_text()
    assert {"single", "vote"} <= set(served)
    assert "coe" not in served and "bench-coe-query" not in served
    skipped = "skipping graph bench-coe-query: nodes.route.params.artifact: none of the artifact's experts"
    assert skipped in log.read_text()
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    calls = answer["coe"]["calls"]
    assert sorted(call["expert"] for call in calls) == sorted(standins)
    assert all("error" not in call for call in calls), calls
