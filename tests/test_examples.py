"""Docs that run: the README's examples are the files under examples/, and they work against a live
server; every subcommand ``coe --help`` lists is in the README."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env, coe, subcommands

README = REPO / "README.md"
EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_file())


def run_example(argv: list[str], live_server: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "COE_URL": live_server + "/v1"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result


def test_openai_client_example(live_server: str) -> None:
    lines = run_example([sys.executable, "examples/openai_client.py"], live_server).stdout.splitlines()
    [usage] = [i for i, line in enumerate(lines) if line.startswith("  usage: ")]
    answer, calls, streamed = lines[: usage - 3], lines[usage - 3 : usage], lines[usage + 1 : -1]
    assert "".join(answer).strip(), "the vote's answer"
    assert sorted(line.split(":")[0].strip() for line in calls) == ["gemma3-270m", "smollm2", "smollm2-warm"]
    assert re.fullmatch(r"  usage: \d+ tokens, \$\d\.\d{8}", lines[usage])
    assert "".join(streamed).strip(), "the streamed answer"
    assert lines[-1] == "  answered by ['smollm2']"


def test_curl_example(live_server: str) -> None:
    out = run_example(["sh", "examples/curl.sh"], live_server).stdout
    plain, _, streamed = out.partition("\n")
    body = json.loads(plain)
    assert body["choices"][0]["message"]["content"]
    assert body["coe"]["graph"] == "single"
    events = [line.removeprefix("data: ") for line in streamed.splitlines() if line]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["coe"]["calls"][0]["expert"] == "smollm2"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]).strip()


def test_curl_example_uses_the_key(live_server: str) -> None:
    """COE_API_KEY reaches the server as a bearer token (a server without keys ignores it)."""
    env = {**clean_env(), "COE_URL": live_server + "/v1/nope", "COE_API_KEY": "sekrit"}
    result = subprocess.run(
        ["sh", "-x", "examples/curl.sh"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    assert result.returncode != 0, "a wrong URL fails the script"
    assert "Authorization: Bearer sekrit" in result.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_readme_shows_each_example(example: os.PathLike[str]) -> None:
    text = Path(example).read_text(encoding="utf-8").strip()
    assert text in README.read_text(encoding="utf-8"), f"README does not show {example} as it is"


def test_readme_mentions_every_command() -> None:
    readme = README.read_text(encoding="utf-8")
    commands = subcommands(coe("--help").stdout)
    assert commands
    missing = [c for c in commands if f"coe {c}" not in readme]
    assert not missing, f"README does not mention: {', '.join(missing)}"


def test_readme_mentions_the_make_targets() -> None:
    readme = README.read_text(encoding="utf-8")
    for target in ("make serve", "make test", "make test-vllm"):
        assert target in readme
