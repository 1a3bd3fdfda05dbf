"""The two built-in pipelines over the configured experts: ``single`` and ``vote``."""

from __future__ import annotations

from coe.aggregators.vote import VoteAggregator
from coe.experts.pool import ExpertPool
from coe.pipeline import Pipeline, RunParams, RunResult, Trace, call_expert, fan_out
from coe.types import Messages


class SinglePipeline(Pipeline):
    description = "the first expert of the pool answers"

    def __init__(self, pool: ExpertPool, experts: list[str]) -> None:
        self.name = "single"
        self.pool = pool
        self.experts = experts[:1]

    async def run(self, messages: Messages, params: RunParams) -> RunResult:
        trace = Trace(self.name)
        candidate = await call_expert(self.pool.client(self.experts[0]), messages, params, trace, "answer")
        trace.aggregate.append({"node": "answer", "method": "single", "chosen": [candidate.expert]})
        return RunResult(candidate.content, trace)


class VotePipeline(Pipeline):
    description = "every expert answers; the answer most of them agree on wins"

    def __init__(self, pool: ExpertPool, experts: list[str]) -> None:
        self.name = "vote"
        self.pool = pool
        self.experts = experts

    async def run(self, messages: Messages, params: RunParams) -> RunResult:
        trace = Trace(self.name)
        clients = [self.pool.client(name) for name in self.experts]
        candidates = await fan_out(clients, messages, params, trace, "experts")
        result = await VoteAggregator().aggregate(messages, candidates)
        trace.aggregate.append({"node": "vote", "chosen": list(result.chosen), **result.detail})
        return RunResult(result.content, trace)


def builtin_pipelines(pool: ExpertPool, experts: list[str]) -> dict[str, Pipeline]:
    return {"single": SinglePipeline(pool, experts), "vote": VotePipeline(pool, experts)}
