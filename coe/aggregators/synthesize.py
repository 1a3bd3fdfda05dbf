"""``synthesize``: Symbolic-MoE's aggregator. One expert reads every candidate answer (in the order
given: the router's draw order) and writes the final answer, with a chain of thought.

The aggregating expert is named by ``expert``, or read from a router artifact (``artifact``, a
``skills`` artifact whose ``aggregator.chosen`` was picked per task by the synthetic aggregation
test of ``coe train --aggregation-test``). Its call has role ``aggregate`` and streams. The
request's ``max_tokens`` bounds it unless the graph sets ``max_tokens``. When every candidate
says the same thing there is nothing to synthesise and no call is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, model_validator

from coe.aggregators.base import Aggregate, Aggregator, AggregatorContext, AggregatorParams, Loc
from coe.aggregators.llm import synthesis_call
from coe.errors import CoeError, UserError
from coe.experts.base import Emit
from coe.pipeline import RunParams
from coe.prompts import listing, prompt_problem, question_text, resolve_prompt
from coe.types import Candidate, Message, Messages


class SynthesizeParams(AggregatorParams):
    expert: str | None = Field(None, description="the aggregating expert")
    artifact: str | None = Field(None, description="a skills artifact whose aggregation test chose one")
    max_tokens: int | None = Field(None, gt=0, description="default: the request's max_tokens")
    temperature: float | None = Field(None, ge=0, le=2)
    prompt: str = Field("synthesize", description="a prompt name (coe.prompts) or its text")

    @model_validator(mode="after")
    def _one_source(self) -> SynthesizeParams:
        if (self.expert is None) == (self.artifact is None):
            raise ValueError("give exactly one of expert or artifact")
        return self


def chosen_aggregator(artifact: str, base_dir: Path) -> str:
    """The expert the artifact's aggregation test chose."""
    from routers.artifacts import read_artifact, resolve

    found = read_artifact(resolve(artifact, base_dir))
    chosen = found.meta.get("aggregator", {}).get("chosen")
    if not isinstance(chosen, str):
        raise UserError(f"{found.path}: no aggregator chosen (coe train --aggregation-test)")
    return chosen


def synthesis_messages(
    prompt_text: str, messages: Messages, candidates: Sequence[Candidate]
) -> list[Message]:
    """The one user message the aggregator reads: the responses, then the question."""
    prompt = resolve_prompt(prompt_text, "synthesize")
    answers = listing([c.content for c in candidates], heading="### Response {i}:", start=1, limit=6000)
    text = prompt.render(question=question_text(messages), answers=answers + "\n")
    return [{"role": "user", "content": text}]


class SynthesizeAggregator(Aggregator):
    Params = SynthesizeParams

    def __init__(
        self, params: AggregatorParams | None = None, context: AggregatorContext | None = None
    ) -> None:
        super().__init__(params, context)
        assert isinstance(self.params, SynthesizeParams)
        self.expert = self.params.expert or chosen_aggregator(
            str(self.params.artifact), self.context.base_dir
        )
        self.prompt = resolve_prompt(self.params.prompt, f"{self.context.node}.params.prompt")

    @classmethod
    def expert_refs(cls, params: AggregatorParams) -> list[tuple[Loc, str]]:
        assert isinstance(params, SynthesizeParams)
        return [(("expert",), params.expert)] if params.expert else []

    @classmethod
    def check(cls, params: AggregatorParams, context: AggregatorContext) -> list[tuple[Loc, str]]:
        assert isinstance(params, SynthesizeParams)
        problems: list[tuple[Loc, str]] = []
        problem = prompt_problem(params.prompt, "synthesize")
        if problem:
            problems.append((("prompt",), problem))
        if params.artifact:
            try:
                chosen = chosen_aggregator(params.artifact, context.base_dir)
            except CoeError as err:
                return [*problems, (("artifact",), str(err))]
            if context.experts and chosen not in context.experts:
                problems.append(
                    (("artifact",), f"its aggregator {chosen!r} is not among the graph's experts")
                )
        return problems

    async def aggregate(
        self,
        messages: Messages,
        candidates: Sequence[Candidate],
        params: RunParams | None = None,
        emit: Emit | None = None,
    ) -> Aggregate:
        if not candidates:
            raise UserError("synthesize needs at least one candidate answer")
        if len({c.content for c in candidates}) == 1:
            first = candidates[0]
            chosen = tuple(c.expert for c in candidates)
            return Aggregate(first.content, chosen, {"method": "single"}, first.finish_reason)
        assert isinstance(self.params, SynthesizeParams)
        return await synthesis_call(
            self.context,
            self.expert,
            synthesis_messages(self.prompt.text, messages, candidates),
            self.prompt,
            params,
            self.params.max_tokens,
            self.params.temperature,
            emit,
        )
