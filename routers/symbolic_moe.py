"""``symbolic-moe``: Symbolic Mixture-of-Experts, skill-based recruiting (Chen et al., 2025).

Skills are keywords. The profile gives each expert a score per skill: +1 for every dev question
needing that skill it answered correctly, −1 for every one it missed. An expert's global
competency is its total score, shifted to be positive when needed and sharpened with temperature
0.5 into a distribution over experts. For a query:

1. an annotator names its skills: ``embedding`` (fast) maps the query to the ``n_skills`` nearest
   profile skills (cosine to each skill's mean dev-question embedding); ``llm`` asks an expert
   (``annotator``) ``samples`` times for 2–5 skills, keeps the keywords that repeat and maps each
   to the nearest profile skill by name (falling back to ``embedding`` when none repeats);
2. local suitability of an expert = the sum of its scores on those skills; experts with a positive
   suitability are candidates (all of them, shifted positive, when none is);
3. ``k`` experts are drawn with replacement from ``suitability × competency`` (normalised) with a
   generator seeded by ``seed`` and the query text. A repeated draw calls the expert once and
   counts its vote once per draw (``weights``); at most ``k`` distinct experts are called.
   ``draw: top`` takes the ``k`` best instead (a deterministic variant, not the paper's).

Artifact kind ``skills`` (``coe train``): ``skills`` (names); arrays ``S`` (skills × experts
scores), ``P`` (skill prototypes) and ``N`` (embeddings of the skill names).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from coe.errors import CoeError, UserError
from coe.types import ExpertRequest, Messages, RouteDecision
from routers.base import RouterParams
from routers.embedding import query_text
from routers.random import query_rng
from routers.trained import TrainedParams, TrainedRouter

ANNOTATE_PROMPT = (
    "Which skills or areas of knowledge does answering this question need? Do not answer it. "
    "List 2 to 5 short keywords (such as 'algebra', 'organic chemistry', 'contract law'), "
    "separated by commas, and nothing else.\n\n{question}"
)


class SymbolicMoEParams(TrainedParams):
    k: int = Field(3, gt=0, le=8, description="draws (with replacement)")
    temperature: float = Field(0.5, gt=0, description="sharpens global competency")
    n_skills: int = Field(3, gt=0, description="embedding annotator: nearest profile skills per query")
    seed: int = 0
    draw: Literal["sample", "top"] = "sample"
    annotator: str | None = Field(None, description="an expert that lists skills (the paper's LLM annotator)")
    samples: int = Field(5, gt=0, description="LLM annotator: how many times to ask")
    min_repeat: int = Field(2, gt=0, description="LLM annotator: keep keywords named this many times")
    annotator_max_tokens: int = Field(48, gt=0)
    annotator_temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature of the annotator")


def competency(totals: NDArray[np.float32], temperature: float) -> NDArray[np.float64]:
    """Global competency: total skill scores shifted positive (``x − min + 1``), raised to ``1/T``,
    normalised."""
    values = totals.astype(np.float64)
    if values.min() < 0:
        values = values - values.min() + 1
    scaled = np.power(values, 1.0 / temperature)
    return np.asarray(scaled / scaled.sum(), dtype=np.float64)


def recruit_weights(local: NDArray[np.float32], strength: NDArray[np.float64]) -> NDArray[np.float64]:
    """Draw probabilities: positive suitability × competency (or all, shifted positive)."""
    values = local.astype(np.float64)
    positive = (values > 0).any()
    values = np.where(values > 0, values, 0.0) if positive else values - values.min() + 1
    weights = values * strength
    return np.asarray(weights / weights.sum(), dtype=np.float64)


_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def keywords(text: str) -> list[str]:
    """Comma, semicolon or line separated keywords, without list bullets, lower-cased."""
    out = []
    for part in re.split(r"[,;\n]", text.lower()):
        word = " ".join(_BULLET.sub("", part).strip(" .*:'\"").split())
        if 2 <= len(word) <= 60:
            out.append(word)
    return out


class SymbolicMoERouter(TrainedRouter):
    Params = SymbolicMoEParams
    name = "symbolic-moe"
    kind = "skills"

    @classmethod
    def expert_refs(cls, params: RouterParams) -> list[tuple[tuple[str | int, ...], str]]:
        assert isinstance(params, SymbolicMoEParams)
        return [(("annotator",), params.annotator)] if params.annotator else []

    def setup(self) -> None:
        params = self.params
        assert isinstance(params, SymbolicMoEParams)
        cols = [self.artifact.experts.index(e) for e in self.pool]
        self.skills: list[str] = list(self.artifact.meta["skills"])
        self.scores = self.artifact.array("S")[:, cols]
        self.prototypes = self.artifact.array("P")
        self.names = self.artifact.array("N")
        self.strength = competency(self.scores.sum(axis=0), params.temperature)
        if params.annotator and self.context.lookup is None:
            raise UserError("router symbolic-moe: the LLM annotator needs experts to call")

    def nearest(self, vector: NDArray[np.float32], table: NDArray[np.float32], n: int) -> list[int]:
        return [int(i) for i in np.argsort(-(table @ vector), kind="stable")[:n]]

    async def annotate(self, messages: Messages) -> list[int]:
        """Indices of this query's profile skills."""
        params = self.params
        assert isinstance(params, SymbolicMoEParams)
        if params.annotator:
            found = await self.annotate_llm(query_text(messages), params)
            if found:
                return found
        return self.nearest(await self.vector(messages), self.prototypes, params.n_skills)

    async def annotate_llm(self, question: str, params: SymbolicMoEParams) -> list[int]:
        """The paper's annotator: ask ``samples`` times, keep repeated keywords, map each to the
        profile skill whose name is nearest."""
        assert self.context.lookup is not None and params.annotator is not None
        client = self.context.lookup.client(params.annotator)
        request = ExpertRequest(
            [{"role": "user", "content": ANNOTATE_PROMPT.format(question=question)}],
            max_tokens=params.annotator_max_tokens,
            temperature=params.annotator_temperature,
        )
        answers = await asyncio.gather(
            *(client.complete(request) for _ in range(params.samples)), return_exceptions=True
        )
        counts: Counter[str] = Counter()
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, CoeError):
                    raise answer
                continue
            counts.update(set(keywords(answer.content)))
        kept = [kw for kw, n in counts.most_common() if n >= params.min_repeat]
        indices: list[int] = []
        if kept:
            vectors = await asyncio.to_thread(self.embedder.embed, kept)
            for vector in vectors:
                index = self.nearest(vector, self.names, 1)[0]
                if index not in indices:
                    indices.append(index)
        return indices

    def recruit(self, skills: list[int], messages: Messages) -> dict[str, int]:
        params = self.params
        assert isinstance(params, SymbolicMoEParams)
        local = self.scores[skills].sum(axis=0)
        probs = recruit_weights(local, self.strength)
        if params.draw == "top":
            order = np.argsort(-probs, kind="stable")[: params.k]
            return {self.pool[int(i)]: 1 for i in order}
        drawn = query_rng(params.seed, messages).choices(
            range(len(self.pool)), weights=probs.tolist(), k=params.k
        )
        counts = Counter(drawn)
        ranked = sorted(counts, key=lambda i: (-counts[i], -probs[i]))
        return {self.pool[i]: counts[i] for i in ranked}

    async def route(self, messages: Messages) -> RouteDecision:
        skills = await self.annotate(messages)
        votes = self.recruit(skills, messages)
        experts = tuple(votes)
        return RouteDecision(
            experts,
            experts[0],
            skills=tuple(self.skills[i] for i in skills),
            confidence=votes[experts[0]] / sum(votes.values()),
            weights={e: float(n) for e, n in votes.items()},
            router=self.name,
        )
