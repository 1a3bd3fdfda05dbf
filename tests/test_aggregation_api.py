"""Through the API (`coe serve` over the repo's graphs): MoA's aggregator, SMoA's synthesis and
Symbolic-MoE's aggregator stream the final answer token by token, then the trace, then [DONE]."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

QUESTION = [{"role": "user", "content": "Name two primary colours and say why they are primary."}]
#: the role that writes each graph's answer, and the roles its other calls have
ROLES = {
    "moa": ("aggregate", {"propose"}),
    "smoa": ("aggregate", {"propose", "judge"}),
    "symbolic-moe": ("aggregate", {"answer"}),
}


def stream(url: str, graph: str, max_tokens: int) -> list[str]:
    request = {"model": graph, "messages": QUESTION, "max_tokens": max_tokens, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=request, timeout=600) as response:
        assert response.status_code == 200, response.read()
        return [line.removeprefix("data: ") for line in response.iter_lines() if line]


@pytest.mark.parametrize("graph", sorted(ROLES))
def test_final_synthesis_streams_then_trace_then_done(live_server: str, graph: str) -> None:
    events = stream(live_server, graph, 24)
    assert events[-1] == "[DONE]"
    chunks: list[dict[str, Any]] = [json.loads(e) for e in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    pieces = [p for p in pieces if p]
    trace = chunks[-1]["coe"]
    assert chunks[-1]["choices"] == [] and trace["graph"] == graph
    writer, others = ROLES[graph]
    final = trace["calls"][-1]
    assert final["role"] == writer, "the last call writes the answer"
    assert len(pieces) >= 3, f"the synthesis arrives token by token, not in one piece: {pieces}"
    assert "".join(pieces).strip() == final["answer"]
    assert {c["role"] for c in trace["calls"][:-1]} - {"roles"} == others
    if graph == "smoa":
        assert trace["selections"] and all(len(s["indices"]) == 2 for s in trace["selections"])
