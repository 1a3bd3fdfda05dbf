"""The ``coe`` command as users run it: a subprocess, its exit code and its output."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from conftest import REPO, coe, subcommands, write_settings


def test_help_lists_the_commands() -> None:
    result = coe("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: coe")
    assert {"serve", "chat", "prepare"} <= set(subcommands(result.stdout))


def test_each_command_has_help() -> None:
    for command in subcommands(coe("--help").stdout):
        result = coe(command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith(f"usage: coe {command}"), command


def test_no_command_is_bad_input() -> None:
    result = coe()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


def test_chat_against_a_server(live_server: str) -> None:
    result = coe("chat", "Name a fruit.", "--url", live_server, "--max-tokens", "16")
    assert result.returncode == 0, result.stderr
    answer, _, trace = result.stdout.partition("\n\n")
    assert answer.strip()
    assert trace.startswith("graph single  wall ")
    assert re.search(r"^  call\[\w+\] smollm2: \d+\.\d\ds \d+\+\d+ tok: ", trace, re.MULTILINE), trace
    assert "aggregate" in trace or "chose smollm2" in trace


def test_chat_json(live_server: str) -> None:
    result = coe("chat", "Say yes.", "--url", live_server, "--graph", "single", "--max-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["object"] == "chat.completion" and body["coe"]["graph"] == "single"


def test_chat_unknown_graph_is_bad_input(live_server: str) -> None:
    result = coe("chat", "hi", "--url", live_server, "--graph", "nope")
    assert result.returncode == 2
    assert result.stderr.startswith("coe chat: ") and "'nope' does not exist" in result.stderr


def test_chat_unreachable_server_is_a_failure() -> None:
    from coe.experts.launch import free_port

    result = coe("chat", "hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("coe chat: cannot reach")


def reason(stderr: str, command: str = "serve") -> str:
    """The one-line reason ``coe`` gives (after any log lines)."""
    lines = [line for line in stderr.splitlines() if line.startswith(f"coe {command}: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def _leftovers(marker: str) -> list[str]:
    """Command lines of running processes that mention ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in line:
                found.append(line)
    return found


def test_serve_bad_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "coe.yaml"
    path.write_text("port: 8000\nprot: 9000\n")
    result = coe("serve", "--config", str(path), "--port", "0", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"coe serve: {path}:2:1: prot: unknown field"


def test_serve_bad_experts_file(tmp_path: Path) -> None:
    experts = tmp_path / "experts.yaml"
    experts.write_text("experts:\n  - name: a\n    backend: llamacpp\n    model: m.gguf\n    params_b: big\n")
    config = write_settings(tmp_path, experts_file=experts)
    started = time.monotonic()
    result = coe("serve", "--config", str(config), "--port", "0", timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"coe serve: {experts}:5:5: experts[0].params_b: "), result.stderr
    assert time.monotonic() - started < 60, "fails before starting anything"
    assert not (tmp_path / "state" / "batch").exists(), "Redis was never started"


def _settings_with(tmp_path: Path, experts_text: str, graphs: Path) -> Path:
    experts = tmp_path / "experts.yaml"
    experts.write_text(experts_text)
    return write_settings(tmp_path, experts_file=experts, graphs_dir=graphs)


def test_serve_bad_graph(tmp_path: Path) -> None:
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    (graphs / "broken.yaml").write_text("nodes: 3\n")
    remote = "experts:\n  - {name: r, backend: openai, model: m, endpoint: 'http://h:9/v1', params_b: 1}\n"
    result = coe(
        "serve", "--config", str(_settings_with(tmp_path, remote, graphs)), "--port", "0", timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert reason(result.stderr).startswith(f"coe serve: {graphs / 'broken.yaml'}:1:1: ")
    assert not (tmp_path / "state" / "batch").exists(), "Redis was never started"


def test_serve_launch_failure_stops_what_it_started(tmp_path: Path) -> None:
    """An expert server that cannot start fails `coe serve` (exit 1) after Redis started: Redis
    is stopped again and nothing is left running."""
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF, but not really")
    local = f"experts:\n  - {{name: broken, backend: llamacpp, model: '{bogus}', params_b: 0.1}}\n"
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    shutil.copy(REPO / "graphs" / "single.yaml", graphs / "single.yaml")
    config = _settings_with(tmp_path, local, graphs)
    result = coe("serve", "--config", str(config), "--port", "0", timeout=180)
    assert result.returncode == 1, result.stderr
    assert reason(result.stderr).startswith("coe serve: server for 'broken' exited with ")
    # Redis keeps its data (batches survive a restart) in state/batch; its server is stopped
    assert (tmp_path / "state" / "batch").is_dir(), "Redis had started"
    assert not _leftovers(str(tmp_path / "state")), "Redis was stopped"
    assert not _leftovers(str(bogus)), "no expert server left behind"
