"""The GPU deployment: docker-compose.yml validates, and config/experts.gpu.yaml names its servers.

No Docker engine runs here: ``docker-compose config`` (Debian's docker-compose) only validates.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import REPO, clean_env

from coe.config import Settings, load_experts

COMPOSE = REPO / "docker-compose.yml"
GPU_CONFIG = REPO / "config" / "coe.gpu.yaml"


def options(argv: list[str]) -> dict[str, str]:
    """``--key=value`` arguments of a command as {key: value}."""
    return dict(arg.removeprefix("--").split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose["services"]  # type: ignore[no-any-return]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_file_validates() -> None:
    done = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO, capture_output=True, text=True, env=clean_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


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
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--appendfsync") + 1] == "always"
