"""``weighted-vote``: a calibrated vote for multiple-choice questions.

Each answer votes for the letter MMLU-Pro's extraction finds in it, with the weight of its
estimated reliability on this query: the log-odds of its expert being right given the query's
predicted category (the ``answers`` artifact's classifier) and how the answer gave its letter
(stated as asked, "the answer is (X)", or only found by fallback), smoothed on dev
(``coe.aggregators.reliability``). A route's draw weights multiply it. The letter with the most
weight wins; ties go to the first listed answer naming it; an answer with no letter never wins
unless none has one (then the first answer is kept). The trace shows each answer's letter,
form and weight, the tally and the leader's posterior.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from coe.aggregators.base import Aggregate, Aggregator, AggregatorContext, AggregatorParams, Loc
from coe.aggregators.reliability import FORMS, answer_features, backing, question_options
from coe.errors import CoeError, UserError
from coe.experts.base import Emit
from coe.pipeline import RunParams
from coe.types import Candidate, Messages


class WeightedVoteParams(AggregatorParams):
    artifact: str = Field(description="an `answers` artifact (coe train), relative to the graph")
    cache: bool = Field(True, description="keep query embeddings in the on-disk cache")
    threads: int = Field(1, ge=1, le=64, description="torch threads of the embedder")


class WeightedVoteAggregator(Aggregator):
    Params = WeightedVoteParams

    @classmethod
    def check(cls, params: AggregatorParams, context: AggregatorContext) -> list[tuple[Loc, str]]:
        assert isinstance(params, WeightedVoteParams)
        from routers.artifacts import read_artifact, resolve

        try:
            artifact = read_artifact(resolve(params.artifact, context.base_dir))
        except CoeError as err:
            return [(("artifact",), str(err))]
        if artifact.kind != "answers":
            return [(("artifact",), f"a {artifact.kind!r} artifact; weighted-vote needs 'answers'")]
        return []

    def _router(self) -> object:
        from routers.artifacts import resolve
        from routers.ranked import ranked_router

        params = self.params
        assert isinstance(params, WeightedVoteParams)
        path = resolve(params.artifact, self.context.base_dir)
        return ranked_router(path, tuple(self.context.experts), params.cache, params.threads)

    async def aggregate(
        self,
        messages: Messages,
        candidates: Sequence[Candidate],
        params: RunParams | None = None,
        emit: Emit | None = None,
    ) -> Aggregate:
        from routers.ranked import RankedRouter

        if not candidates:
            raise UserError("weighted-vote needs at least one candidate answer")
        router = self._router()
        assert isinstance(router, RankedRouter)
        probs = await router.probs(messages)
        options = question_options(messages)
        answers = [(c.expert, answer_features(c.content, options)) for c in candidates]
        tally = router.reliability.tally(answers, probs, router.options, [c.weight for c in candidates])
        index = backing(answers, tally.leader)
        winner = candidates[index]
        detail = {
            "method": "weighted-vote",
            "key": tally.leader,
            "posterior": round(tally.posterior, 4),
            "tally": {k: round(v, 4) for k, v in tally.scores.items()},
            "keys": [f.letter for _, f in answers],
            "forms": [FORMS[f.form] for _, f in answers],
            "weights": [round(w, 4) for w in tally.weights],
            "category": router.labels[int(probs.argmax())],
        }
        chosen = tuple(
            c.expert for c, (_, f) in zip(candidates, answers, strict=True) if f.letter == tally.leader
        )
        return Aggregate(winner.content, chosen or (winner.expert,), detail, winner.finish_reason)
