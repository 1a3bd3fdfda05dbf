"""``moa``: Mixture-of-Agents' aggregator (Together MoA; also SMoA's final synthesis). One expert
answers the conversation with the candidate answers injected into its system message, after the
aggregate-and-synthesise instruction, as a numbered list (reasoning between ``<think>`` tags
stripped). Its call has role ``aggregate`` and streams; temperature 0.7 unless set.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from coe.aggregators.base import Aggregate, Aggregator, AggregatorContext, AggregatorParams, Loc
from coe.aggregators.llm import synthesis_call
from coe.errors import UserError
from coe.experts.base import Emit
from coe.pipeline import RunParams
from coe.prompts import inject_references, prompt_problem, resolve_prompt
from coe.types import Candidate, Messages


class MoAParams(AggregatorParams):
    expert: str = Field(description="the aggregating expert")
    max_tokens: int | None = Field(None, gt=0, description="default: the request's max_tokens")
    temperature: float | None = Field(0.7, ge=0, le=2)
    prompt: str = Field("moa.references", description="a prompt name (coe.prompts) or its text")


class MoAAggregator(Aggregator):
    Params = MoAParams

    def __init__(
        self, params: AggregatorParams | None = None, context: AggregatorContext | None = None
    ) -> None:
        super().__init__(params, context)
        assert isinstance(self.params, MoAParams)
        self.prompt = resolve_prompt(self.params.prompt, f"{self.context.node}.params.prompt")

    @classmethod
    def expert_refs(cls, params: AggregatorParams) -> list[tuple[Loc, str]]:
        assert isinstance(params, MoAParams)
        return [(("expert",), params.expert)]

    @classmethod
    def check(cls, params: AggregatorParams, context: AggregatorContext) -> list[tuple[Loc, str]]:
        assert isinstance(params, MoAParams)
        problem = prompt_problem(params.prompt, "moa.references")
        return [(("prompt",), problem)] if problem else []

    async def aggregate(
        self,
        messages: Messages,
        candidates: Sequence[Candidate],
        params: RunParams | None = None,
        emit: Emit | None = None,
    ) -> Aggregate:
        if not candidates:
            raise UserError("moa needs at least one candidate answer")
        assert isinstance(self.params, MoAParams)
        injected = inject_references(messages, [c.content for c in candidates], self.prompt)
        return await synthesis_call(
            self.context,
            self.params.expert,
            injected,
            self.prompt,
            params,
            self.params.max_tokens,
            self.params.temperature,
            emit,
        )
