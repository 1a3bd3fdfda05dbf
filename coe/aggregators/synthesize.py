"""An LLM aggregator (Symbolic-MoE's, after Mixture-of-Agents): one expert reads the candidate
answers and writes the final answer.

The aggregating expert is named by ``expert``, or read from a router artifact (``artifact``, a
``skills`` artifact whose ``aggregator.chosen`` was picked per task by the synthetic aggregation
test of ``coe train --aggregation-test``). Its call is recorded in the trace with role ``judge``
(so evaluations do not count it as an answer). With a single distinct candidate there is nothing
to synthesise and no call is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from coe.aggregators.base import Aggregate, Aggregator
from coe.errors import UserError
from coe.graph.nodes.judging import listing, question_text
from coe.pipeline import RunParams, Trace, call_expert
from coe.types import Candidate, Message, Messages

PROMPT = (
    "You have been given answers from several models to the question below. Some may be wrong. "
    "Critically evaluate them, then write one correct, well-reasoned answer. Finish with "
    '"the answer is (X)" when the question has lettered options.\n\n'
    "Question:\n{question}\n\n{answers}"
)


def synthesis_messages(messages: Messages, candidates: Sequence[Candidate]) -> list[Message]:
    prompt = PROMPT.format(question=question_text(messages), answers=listing(list(candidates)))
    return [{"role": "user", "content": prompt}]


class SynthesizeAggregator(Aggregator):
    uses_experts: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.lookup = params.get("lookup")
        self.max_tokens = int(params.get("max_tokens", 256))
        self.expert = params.get("expert") or self._chosen(params)
        if not isinstance(self.expert, str) or self.lookup is None:
            raise UserError("aggregator synthesize needs `expert` or an `artifact` that chose one")

    @staticmethod
    def _chosen(params: dict[str, Any]) -> str | None:
        if not params.get("artifact"):
            return None
        from routers.artifacts import read_artifact, resolve

        base = Path(params.get("base_dir") or ".")
        artifact = read_artifact(resolve(str(params["artifact"]), base))
        chosen = artifact.meta.get("aggregator", {}).get("chosen")
        if not isinstance(chosen, str):
            raise UserError(f"{artifact.path}: no aggregator chosen (coe train --aggregation-test)")
        return chosen

    async def aggregate(self, messages: Messages, candidates: Sequence[Candidate]) -> Aggregate:
        if not candidates:
            raise UserError("synthesize needs at least one candidate answer")
        if len({c.content for c in candidates}) == 1:
            return Aggregate(candidates[0].content, tuple(c.expert for c in candidates), {"method": "single"})
        assert self.lookup is not None and isinstance(self.expert, str)
        trace = Trace("aggregate")
        result = await call_expert(
            self.lookup.client(self.expert),
            synthesis_messages(messages, candidates),
            RunParams(max_tokens=self.max_tokens),
            trace,
            "aggregate",
            "judge",
        )
        return Aggregate(
            result.content,
            (self.expert,),
            {"method": "synthesize", "aggregator": self.expert, "calls": trace.calls},
        )
