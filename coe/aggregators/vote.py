"""Majority vote over candidate answers.

Candidates are compared by an extracted answer key: a choice letter ("the answer is (C)",
"Answer: C") or else the final number in the text. The key with the most (weighted) votes wins;
ties go to the candidate listed first. When no candidate has a key, the answer closest to the
others (mean text similarity) wins, ties again to the first listed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher

from coe.aggregators.base import Aggregate, Aggregator
from coe.errors import UserError
from coe.experts.base import Emit
from coe.pipeline import RunParams
from coe.types import Candidate, Messages

# "Answer" in any case, the letter in upper case only: "the answer is a prime" names no choice.
_CHOICE_PATTERNS = (
    re.compile(r"(?i:answer is):?\s*\(?([A-J])\)?(?![A-Za-z])"),
    re.compile(r"(?i:answer):\s*\(?([A-J])\)?(?![A-Za-z])"),
    re.compile(r"^\s*\(?([A-J])\)?[.)]?\s*$"),
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def answer_key(text: str) -> str | None:
    """The choice letter or final number an answer commits to, or ``None``."""
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match:
            return str(match.group(1)).upper()
    numbers = _NUMBER.findall(text)
    if numbers:
        value = str(numbers[-1]).replace(",", "")
        return value.rstrip("0").rstrip(".") if "." in value else value
    return None


def _closest(candidates: Sequence[Candidate]) -> int:
    if len(candidates) < 2:
        return 0
    best, best_score = 0, -1.0
    for i, cand in enumerate(candidates):
        others = [
            SequenceMatcher(None, cand.content, o.content).ratio() for j, o in enumerate(candidates) if j != i
        ]
        score = sum(others) / len(others)
        if score > best_score + 1e-12:
            best, best_score = i, score
    return best


class VoteAggregator(Aggregator):
    def key(self, text: str) -> str | None:
        """What an answer commits to; answers with the same key agree."""
        return answer_key(text)

    async def aggregate(
        self,
        messages: Messages,
        candidates: Sequence[Candidate],
        params: RunParams | None = None,
        emit: Emit | None = None,
    ) -> Aggregate:
        if not candidates:
            raise UserError("vote needs at least one candidate answer")
        keys = [self.key(c.content) for c in candidates]
        tally: dict[str, float] = {}
        for key, cand in zip(keys, candidates, strict=True):
            if key is not None:
                tally[key] = tally.get(key, 0.0) + cand.weight
        if not tally:
            index = _closest(candidates)
            winner = candidates[index]
            detail = {"method": "closest", "keys": keys}
            return Aggregate(winner.content, (winner.expert,), detail, winner.finish_reason)
        top = max(tally.values())
        # First listed candidate whose key has the top count.
        index = next(i for i, k in enumerate(keys) if k is not None and tally[k] == top)
        winner_key = keys[index]
        agreeing = tuple(c.expert for c, k in zip(candidates, keys, strict=True) if k == winner_key)
        return Aggregate(
            candidates[index].content,
            agreeing,
            {"method": "vote", "key": winner_key, "tally": tally, "keys": keys},
            candidates[index].finish_reason,
        )
