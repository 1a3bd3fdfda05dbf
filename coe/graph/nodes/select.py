"""``select``: an LLM judge keeps ``k`` of the latest answers.

The judge replies with JSON ``{"selected": [i, ...]}``. With ``decide_stop`` it is SMoA's moderator:
one call both selects and decides whether its loop ends, ``{"reasoning", "selected", "stop"}``
(a stop node with ``condition: judge-stop`` reads the verdict). A reply that does not parse, or
names an answer that does not exist, gets ``k`` answers picked by a seeded random choice (one that
keeps fewer than ``k`` is topped up the same way), and the trace says so; a missing ``stop`` means
go on. Where the server supports it the reply is
constrained to the JSON schema.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from coe.errors import ExpertError
from coe.experts.base import Emit
from coe.graph.nodes.base import Loc, NodeKind, NodeParams, Problem, refs
from coe.graph.nodes.judging import first_json_object, judge_messages
from coe.graph.state import GraphState
from coe.pipeline import RunParams, Trace, call_expert
from coe.prompts import prompt_problem, resolve_prompt
from coe.types import Candidate


class SelectParams(NodeParams):
    judge: str = Field(description="the expert that judges")
    k: int = Field(1, gt=0, description="how many answers to keep")
    seed: int = Field(0, description="seed of the fallback choice")
    max_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    decide_stop: bool = Field(False, description="the judge also decides whether the loop ends (SMoA)")
    prompt: str | None = Field(
        None, description="a prompt name or text; default judge.select, or judge.smoa with decide_stop"
    )

    @property
    def default_prompt(self) -> str:
        return "judge.smoa" if self.decide_stop else "judge.select"


def selection_schema(n: int, k: int, decide_stop: bool = False) -> dict[str, Any]:
    """``{"selected": [i, ...]}`` with k distinct indices below n (servers enforce it when they
    can); with ``decide_stop`` also ``stop`` and then ``reasoning``: the verdict comes first, so a
    reply cut short by ``max_tokens`` still carries it. (No string length bounds: llama.cpp's
    grammars make long bounded repetitions very slow.)"""
    index = {"type": "integer", "minimum": 0, "maximum": n - 1}
    selected = {"type": "array", "items": index, "minItems": min(k, n), "maxItems": k, "uniqueItems": True}
    if not decide_stop:
        return {"type": "object", "properties": {"selected": selected}, "required": ["selected"]}
    properties = {"selected": selected, "stop": {"type": "boolean"}, "reasoning": {"type": "string"}}
    return {"type": "object", "properties": properties, "required": list(properties)}


_SELECTED = re.compile(r'"selected"\s*:\s*(\[[^\]]*\])')
_STOP = re.compile(r'"stop"\s*:\s*(true|false)', re.I)


def verdict_of(text: str) -> dict[str, Any]:
    """The judge's JSON object; when there is none (a reply cut short, say), its ``selected`` and
    ``stop`` fields found one by one, as SMoA's own parser does."""
    verdict = first_json_object(text)
    if verdict is not None:
        return verdict
    found: dict[str, Any] = {}
    if match := _SELECTED.search(text):
        with contextlib.suppress(json.JSONDecodeError):
            found["selected"] = json.loads(match.group(1))
    if match := _STOP.search(text):
        found["stop"] = match.group(1).lower() == "true"
    return found


def parse_selection(text: str, n: int, k: int) -> list[int] | None:
    """The distinct indices the judge chose (at most ``k``), or None when its reply does not parse
    or names an answer that does not exist."""
    verdict = verdict_of(text)
    if not isinstance(verdict.get("selected"), list):
        return None
    picked: list[int] = []
    for item in verdict["selected"]:
        if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item < n:
            return None
        if item not in picked:
            picked.append(item)
    return picked[:k] or None


def parse_stop(text: str) -> bool | None:
    stop = verdict_of(text).get("stop")
    return stop if isinstance(stop, bool) else None


class SelectNode(NodeKind):
    Params = SelectParams

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        return refs(params, "judge")

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        assert isinstance(params, SelectParams)
        problem = prompt_problem(params.prompt, params.default_prompt) if params.prompt else None
        return [(("prompt",), problem)] if problem else []

    def _fallback(self, n: int, round_: int, chosen: Sequence[int] = ()) -> list[int]:
        """``chosen``, topped up to k answers by a choice seeded by seed, node and round."""
        assert isinstance(self.params, SelectParams)
        rng = random.Random(f"{self.params.seed}:{self.name}:{round_}")
        rest = [i for i in range(n) if i not in chosen]
        return [*chosen, *sorted(rng.sample(rest, max(0, min(self.params.k, n) - len(chosen))))]

    async def _ask(
        self, state: GraphState, candidates: Sequence[Candidate], trace: Trace, event: dict[str, Any]
    ) -> tuple[list[int] | None, bool | None, str | None]:
        """The judge's selection and stop verdict (None where it gave none), and why it failed."""
        params = self.params
        assert isinstance(params, SelectParams)
        prompt = resolve_prompt(params.prompt or params.default_prompt, f"{self.name}.prompt")
        try:
            reply = await call_expert(
                self.context.lookup.client(params.judge),
                judge_messages(prompt, state["messages"], candidates, params.k),
                RunParams(
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    json_schema=selection_schema(len(candidates), params.k, params.decide_stop),
                    metadata=state["params"].metadata,
                ),
                trace,
                self.name,
                "judge",
                prompt=prompt.name,
            )
        except ExpertError as err:
            return None, None, f"judge failed: {err}"
        if params.decide_stop:
            verdict = verdict_of(reply.content)
            if isinstance(verdict.get("reasoning"), str):
                event["reasoning"] = verdict["reasoning"]
        parsed = parse_selection(reply.content, len(candidates), params.k)
        return parsed, parse_stop(reply.content), None if parsed else "judge output was not a valid selection"

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, SelectParams)
        candidates: Sequence[Candidate] = state.get("latest") or []
        trace = Trace(self.context.graph)
        round_ = self.round(state)
        event: dict[str, Any] = {"node": self.name, "judge": params.judge, "round": round_}
        stop: bool | None = None
        if len(candidates) <= params.k and not params.decide_stop:
            picked, event["reason"] = list(range(len(candidates))), "no more answers than k"
        else:
            parsed, stop, failure = await self._ask(state, candidates, trace, event)
            if parsed is None:
                picked = self._fallback(len(candidates), round_)
                event.update(fallback=True, reason=f"{failure}; seeded random choice")
            elif len(parsed) < min(params.k, len(candidates)):
                picked = self._fallback(len(candidates), round_, parsed)
                event.update(fallback=True, reason=f"the judge kept {len(parsed)}; topped up to k at random")
            else:
                picked, event["fallback"] = parsed, False
        selected = [candidates[i] for i in picked]
        event["selected"] = [c.expert for c in selected]
        event["indices"] = picked
        update: dict[str, Any] = {"selected": selected, "selections": [event], "calls": trace.calls}
        if params.decide_stop:
            event["stop"] = bool(stop)
            if stop is None:
                event["stop_reason"] = "no stop verdict; going on"
            update["judged_stop"] = bool(stop)
        return update
