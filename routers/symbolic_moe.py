"""``symbolic-moe``: Symbolic Mixture-of-Experts, skill-based recruiting (Chen et al., 2025).

Skills are keywords. The profile gives each expert a score per skill: +1 for every dev question
needing that skill it answered correctly, −1 for every one it missed. An expert's global
competency is its total score, shifted to be positive when needed and sharpened with temperature
0.5 into a distribution over experts. For a query:

1. an annotator names its skills: ``embedding`` (fast) maps the query to the ``n_skills`` nearest
   profile skills (cosine to each skill's mean dev-question embedding); the paper's LLM annotator
   (``annotator: EXPERT``) asks that expert ``samples`` times (temperature 0.7) for 2–5 keywords,
   keeps the keywords of at most 20 characters named at least twice over all its answers, and
   maps each to the profile skill whose name embeds nearest; two keywords mapped to one skill
   count it twice (falling back to ``embedding`` when no keyword is kept). Its calls are in the
   trace with role ``annotate``;
2. local suitability of an expert = the sum of its scores on those skills; experts with a positive
   suitability are candidates (all of them, shifted positive, when none is);
3. ``k`` experts are drawn with replacement from ``suitability × competency`` (normalised) with a
   generator seeded by ``seed`` and the query text. As in the paper, a model drawn n times is
   called n times (``repeats: call``: the experts in draw order, repeats included); over replayed
   outputs, which hold one sample per question, ``repeats: weight`` calls it once and counts its
   vote n times (``weights``). ``draw: top`` takes the ``k`` best instead (a deterministic
   variant, not the paper's).

Artifact kind ``skills`` (``coe train``): ``skills`` (names); arrays ``S`` (skills × experts
scores), ``P`` (skill prototypes) and ``N`` (embeddings of the skill names).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from coe.errors import ExpertError, UserError
from coe.pipeline import Job, RunParams, Trace, fan_out
from coe.prompts import prompt_problem, resolve_prompt
from coe.types import Message, Messages, RouteDecision
from routers.base import RouterContext, RouterParams
from routers.embedding import query_text
from routers.random import query_rng
from routers.trained import TrainedParams, TrainedRouter


class SymbolicMoEParams(TrainedParams):
    k: int = Field(3, gt=0, le=8, description="draws (with replacement)")
    temperature: float = Field(0.5, gt=0, description="sharpens global competency")
    n_skills: int = Field(3, gt=0, description="embedding annotator: nearest profile skills per query")
    seed: int = 0
    draw: Literal["sample", "top"] = "sample"
    repeats: Literal["call", "weight"] = Field(
        "call", description="a model drawn n times: called n times (the paper), or once with n votes"
    )
    annotator: str | None = Field(None, description="an expert that lists skills (the paper's LLM annotator)")
    samples: int = Field(5, gt=0, description="LLM annotator: how many times to ask")
    min_repeat: int = Field(2, gt=0, description="LLM annotator: keep keywords named this many times")
    max_keyword_chars: int = Field(20, gt=0, description="LLM annotator: longer keywords are dropped")
    annotator_max_tokens: int = Field(48, gt=0)
    annotator_temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature of the annotator")
    annotator_prompt: str = Field("annotate.keywords", description="a prompt name (coe.prompts) or its text")


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


_LABEL = re.compile(r"^\s*keywords?\s*:", re.I | re.M)


def keywords(text: str) -> list[str]:
    """Comma, semicolon or line separated keywords, without list bullets or a "Keywords:" label,
    lower-cased."""
    out = []
    for part in re.split(r"[,;\n]", _LABEL.sub("", text).lower()):
        word = " ".join(_BULLET.sub("", part).strip(" .*:'\"").split())
        if 2 <= len(word) <= 60:
            out.append(word)
    return out


def kept_keywords(answers: Sequence[str], min_repeat: int = 2, max_chars: int = 20) -> list[str]:
    """The paper's filter over an annotator's answers: keywords of at most ``max_chars``
    characters named at least ``min_repeat`` times in all (most named first)."""
    counts = Counter(k for answer in answers for k in keywords(answer) if len(k) <= max_chars)
    return [k for k, n in counts.most_common() if n >= min_repeat]


class SymbolicMoERouter(TrainedRouter):
    Params = SymbolicMoEParams
    name = "symbolic-moe"
    kind = "skills"

    @classmethod
    def expert_refs(cls, params: RouterParams) -> list[tuple[tuple[str | int, ...], str]]:
        assert isinstance(params, SymbolicMoEParams)
        return [(("annotator",), params.annotator)] if params.annotator else []

    @classmethod
    def check(cls, params: RouterParams, context: RouterContext) -> list[tuple[tuple[str | int, ...], str]]:
        assert isinstance(params, SymbolicMoEParams)
        problem = prompt_problem(params.annotator_prompt, "annotate.keywords")
        return [*super().check(params, context), *([(("annotator_prompt",), problem)] if problem else [])]

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

    async def annotate(self, messages: Messages, trace: Trace, node: str) -> list[int]:
        """Indices of this query's profile skills (repeated where two keywords map to one)."""
        params = self.params
        assert isinstance(params, SymbolicMoEParams)
        if params.annotator:
            found = await self.annotate_llm(query_text(messages), params, trace, node)
            if found:
                return found
        return self.nearest(await self.vector(messages), self.prototypes, params.n_skills)

    async def annotate_llm(
        self, question: str, params: SymbolicMoEParams, trace: Trace, node: str
    ) -> list[int]:
        """The paper's annotator: ask ``samples`` times, keep repeated short keywords, map each to
        the profile skill whose name is nearest (duplicates kept: they are summed)."""
        assert self.context.lookup is not None and params.annotator is not None
        prompt = resolve_prompt(params.annotator_prompt, "symbolic-moe.annotator_prompt")
        client = self.context.lookup.client(params.annotator)
        messages: list[Message] = [{"role": "user", "content": prompt.render(question=question)}]
        job = Job(client, messages, "annotate", prompt=prompt.name)
        run = RunParams(max_tokens=params.annotator_max_tokens, temperature=params.annotator_temperature)
        try:
            answers = await fan_out([job] * params.samples, run, trace, node, min_answers=1)
        except ExpertError:
            return []
        kept = kept_keywords([a.content for a in answers], params.min_repeat, params.max_keyword_chars)
        if not kept:
            return []
        vectors = await asyncio.to_thread(self.embedder.embed, kept)
        return [self.nearest(vector, self.names, 1)[0] for vector in vectors]

    def recruit(self, skills: list[int], messages: Messages) -> tuple[tuple[str, ...], dict[str, float]]:
        """The experts to call (in draw order, or by suitability for ``top``) and their vote
        weights (none when a repeated draw is a repeated call)."""
        params = self.params
        assert isinstance(params, SymbolicMoEParams)
        local = self.scores[skills].sum(axis=0)
        probs = recruit_weights(local, self.strength)
        if params.draw == "top":
            order = np.argsort(-probs, kind="stable")[: params.k]
            top = tuple(self.pool[int(i)] for i in order)
            return top, dict.fromkeys(top, 1.0)
        drawn = query_rng(params.seed, messages).choices(
            range(len(self.pool)), weights=probs.tolist(), k=params.k
        )
        if params.repeats == "call":
            return tuple(self.pool[i] for i in drawn), {}
        counts = Counter(drawn)
        ranked = sorted(counts, key=lambda i: (-counts[i], -probs[i]))
        return tuple(self.pool[i] for i in ranked), {self.pool[i]: float(counts[i]) for i in ranked}

    async def route(self, messages: Messages) -> RouteDecision:
        return await self.route_recorded(messages, Trace(self.name), "route")

    async def route_recorded(self, messages: Messages, trace: Trace, node: str) -> RouteDecision:
        skills = await self.annotate(messages, trace, node)
        experts, weights = self.recruit(skills, messages)
        votes = Counter(experts) if not weights else Counter(weights)
        primary = max(votes, key=lambda e: (votes[e], -experts.index(e)))
        return RouteDecision(
            experts,
            primary,
            skills=tuple(self.skills[i] for i in skills),
            confidence=votes[primary] / sum(votes.values()),
            weights=weights,
            router=self.name,
        )
