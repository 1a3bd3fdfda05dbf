"""``cascade``: call experts a few at a time, in a router's order, and stop at the first
acceptable answer (FrugalGPT, AutoMix, answer-consistency cascades).

The experts are ``experts`` in that order, else the route's (a ``ranked`` route orders them by
expected accuracy), else the pool; ``max_experts`` caps them. ``steps`` says how many are called
at once at each step (``[2, 1]``: two, then one at a time; the last size repeats). After every
step the answers so far are combined (the leading letter: calibrated weighted vote with an
``artifact``, else plain majority, ties to the first called) and the acceptance tests run; all of
them must pass:

- ``parsed``: the leader is stated in the required format ("the answer is (X)") by an answer that
  backs it, not only found as a fallback letter somewhere in the text;
- ``agree``: the last ``m`` answers name the same letter;
- ``confidence``: the confidence model's chance that the leader is right (``artifact``) reaches
  ``threshold``; or, with ``max_calls`` / ``max_cost`` instead, the threshold is calibrated when
  the graph is built so that the cascade, simulated on the artifact's dev questions (answers and
  out-of-fold router inputs), averages at most that many calls or USD per question.

When a test passes the leader is the answer; when the experts run out the leader over every
answer is (``combine: last`` takes the last answer instead). Every call made is in the trace and
in the cost; the node's ``aggregate`` event lists each step: who was called, the leader, its
confidence, each test's verdict and whether the cascade stopped there. The answer is sent once
decided (not streamed token by token: a step's answer is only the answer once accepted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coe.aggregators.base import Aggregate
from coe.aggregators.reliability import (
    AnswerFeatures,
    Reliability,
    Tally,
    answer_features,
    backing,
    question_options,
)
from coe.errors import CoeError, ExpertError, UserError
from coe.experts.base import Emit
from coe.graph.nodes.base import BuildContext, Loc, NodeKind, NodeParams, Problem, refs
from coe.graph.state import GraphState
from coe.pipeline import Job, Trace, fan_out
from coe.types import Candidate

TESTS = ("parsed", "agree", "confidence")


class AcceptTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test: Literal["parsed", "agree", "confidence"]
    m: int = Field(2, ge=2, description="agree: how many of the last answers must name one letter")
    threshold: float | None = Field(None, ge=0, le=1, description="confidence: the least accepted")
    max_calls: float | None = Field(None, gt=0, description="confidence: calibrate for this many calls")
    max_cost: float | None = Field(None, gt=0, description="confidence: calibrate for this USD/question")

    @model_validator(mode="after")
    def _one_bound(self) -> AcceptTest:
        bounds = [b for b in (self.threshold, self.max_calls, self.max_cost) if b is not None]
        if self.test == "confidence" and len(bounds) != 1:
            raise ValueError("a confidence test takes exactly one of threshold, max_calls, max_cost")
        if self.test != "confidence" and bounds:
            raise ValueError("threshold, max_calls and max_cost belong to the confidence test")
        return self


class CascadeParams(NodeParams):
    experts: list[str] | None = Field(None, description="the order to call; default: the route's")
    max_experts: int | None = Field(None, gt=0, description="call at most this many experts")
    steps: list[int] = Field([1], min_length=1, description="experts called at once per step")
    accept: list[AcceptTest] = Field(min_length=1, description="tests an answer must all pass")
    artifact: str | None = Field(None, description="an `answers` artifact: weights and confidence")
    combine: Literal["leader", "last"] = Field("leader", description="the answer when no test passed")
    cache: bool = Field(True, description="keep query embeddings in the on-disk cache")
    threads: int = Field(1, ge=1, le=64, description="torch threads of the embedder")

    @model_validator(mode="after")
    def _needs_artifact(self) -> CascadeParams:
        if any(t.test == "confidence" for t in self.accept) and self.artifact is None:
            raise ValueError("the confidence test needs an artifact")
        if any(s < 1 for s in self.steps):
            raise ValueError("each step calls at least one expert")
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    tally: Tally
    confidence: float | None
    tests: dict[str, bool]


class CascadeNode(NodeKind):
    Params = CascadeParams

    def __init__(self, name: str, params: NodeParams, context: BuildContext) -> None:
        super().__init__(name, params, context)
        assert isinstance(params, CascadeParams)
        self.router: Any = None
        if params.artifact is not None:
            from routers.artifacts import resolve
            from routers.ranked import ranked_router

            path = resolve(params.artifact, context.base_dir)
            self.router = ranked_router(path, tuple(context.experts), params.cache, params.threads)
        self.threshold = self._threshold(params)

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        return refs(params, "experts")

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        assert isinstance(params, CascadeParams)
        if params.artifact is None:
            return []
        from routers.artifacts import read_artifact, resolve

        try:
            artifact = read_artifact(resolve(params.artifact, base_dir))
        except CoeError as err:
            return [(("artifact",), str(err))]
        if artifact.kind != "answers":
            return [(("artifact",), f"a {artifact.kind!r} artifact; a cascade needs 'answers'")]
        return []

    @property
    def reliability(self) -> Reliability | None:
        return self.router.reliability if self.router is not None else None

    # -- one step's verdict ------------------------------------------------------------------

    def verdict(
        self, answers: Sequence[tuple[str, AnswerFeatures]], probs: Any, threshold: float | None
    ) -> Verdict:
        """Combine the answers so far and run the tests (``threshold`` for ``confidence``)."""
        assert isinstance(self.params, CascadeParams)
        confidence = None
        if self.reliability is not None:
            tally, inputs = self.reliability.features(answers, probs, self.router.options)
            confidence = self.reliability.confidence(inputs)
        else:
            tally = _majority(answers)
        tests: dict[str, bool] = {}
        for test in self.params.accept:
            if test.test == "parsed":
                ok = any(f.letter == tally.leader and f.form == 3 for _, f in answers)
            elif test.test == "agree":
                last = [f.letter for _, f in answers[-test.m :]]
                ok = len(last) == test.m and last[0] is not None and len(set(last)) == 1
            else:
                ok = confidence is not None and threshold is not None and confidence >= threshold
            tests[test.test] = ok
        return Verdict(tally, confidence, tests)

    def batches(self, names: Sequence[str]) -> list[list[str]]:
        assert isinstance(self.params, CascadeParams)
        out, i, step = [], 0, 0
        while i < len(names):
            size = self.params.steps[min(step, len(self.params.steps) - 1)]
            out.append(list(names[i : i + size]))
            i, step = i + size, step + 1
        return out

    def order(self, state: GraphState) -> list[str]:
        assert isinstance(self.params, CascadeParams)
        route = state.get("route")
        names = list(self.params.experts or (route.experts if route is not None else self.context.experts))
        return names[: self.params.max_experts or None]

    # -- the run -------------------------------------------------------------------------------

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        assert isinstance(self.params, CascadeParams)
        messages = state["messages"]
        options = question_options(messages)
        probs = await self.router.probs(messages) if self.router is not None else None
        trace = Trace(self.context.graph)
        candidates: list[Candidate] = []
        answers: list[tuple[str, AnswerFeatures]] = []
        steps: list[dict[str, Any]] = []
        verdict: Verdict | None = None
        batches = self.batches(self.order(state))
        for i, batch in enumerate(batches):
            jobs = [Job(self.context.lookup.client(name), messages, "answer") for name in batch]
            try:
                got = await fan_out(jobs, state["params"], trace, self.name, min_answers=1)
            except ExpertError:
                if i == len(batches) - 1 and not candidates:
                    raise
                continue
            candidates += got
            answers += [(c.expert, answer_features(c.content, options)) for c in got]
            verdict = self.verdict(answers, probs, self.threshold)
            accepted = all(verdict.tests.values())
            steps.append(_step_event(batch, verdict, accepted))
            if accepted:
                break
        if verdict is None:
            raise UserError(f"node {self.name!r}: no expert to call")
        return self._update(candidates, answers, verdict, steps, trace)

    def _update(
        self,
        candidates: list[Candidate],
        answers: list[tuple[str, AnswerFeatures]],
        verdict: Verdict,
        steps: list[dict[str, Any]],
        trace: Trace,
    ) -> dict[str, Any]:
        assert isinstance(self.params, CascadeParams)
        accepted = bool(steps) and steps[-1]["accepted"]
        if accepted or self.params.combine == "leader":
            index = backing(answers, verdict.tally.leader)
        else:
            index = len(candidates) - 1
        winner = candidates[index]
        key = answers[index][1].letter
        agreeing = tuple(c.expert for c, (_, f) in zip(candidates, answers, strict=True) if f.letter == key)
        chosen = agreeing if key is not None else (winner.expert,)
        event = {
            "node": self.name,
            "aggregator": "cascade",
            "chosen": list(chosen),
            "method": "accepted" if accepted else f"fell through ({self.params.combine})",
            "key": key,
            "threshold": None if self.threshold is None else round(self.threshold, 4),
            "steps": steps,
        }
        aggregate = Aggregate(winner.content, chosen, {}, winner.finish_reason)
        return {
            "latest": candidates,
            "history": candidates,
            "selected": [],
            "aggregate": aggregate,
            "aggregates": [event],
            "calls": trace.calls,
        }

    # -- calibration to a budget ---------------------------------------------------------------

    def _threshold(self, params: CascadeParams) -> float | None:
        test = next((t for t in params.accept if t.test == "confidence"), None)
        if test is None:
            return None
        if test.threshold is not None:
            return test.threshold
        from coe.graph.nodes.cascade_calibration import calibrate

        return calibrate(self, test.max_calls, test.max_cost)


def _majority(answers: Sequence[tuple[str, AnswerFeatures]]) -> Tally:
    scores: dict[str, float] = {}
    for _, f in answers:
        if f.letter is not None:
            scores[f.letter] = scores.get(f.letter, 0.0) + 1.0
    if not scores:
        return Tally(scores, None, 0.0, [1.0] * len(answers))
    top = max(scores.values())
    leader = next(f.letter for _, f in answers if f.letter is not None and scores[f.letter] == top)
    return Tally(scores, leader, top / len(answers), [1.0] * len(answers))


def _step_event(batch: list[str], verdict: Verdict, accepted: bool) -> dict[str, Any]:
    return {
        "experts": batch,
        "leader": verdict.tally.leader,
        "confidence": None if verdict.confidence is None else round(verdict.confidence, 4),
        "tests": verdict.tests,
        "accepted": accepted,
    }


__all__ = ["TESTS", "AcceptTest", "CascadeNode", "CascadeParams"]
