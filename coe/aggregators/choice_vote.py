"""Weighted majority vote for multiple-choice benchmarks: answers agree when MMLU-Pro's own
extraction chain (``coe.questions.extract.extract_choice``) finds the same letter in them.

``vote`` keys answers by "the answer is (X)"-style phrases, else their last number, which suits
free-form questions; on MMLU-Pro answers that end without such a phrase it keys a number where
the benchmark's scorer reads a letter, so agreeing answers fail to agree. Weights, ties (to the
first listed) and the no-key fallback are ``vote``'s.
"""

from __future__ import annotations

from coe.aggregators.vote import VoteAggregator
from coe.questions.extract import extract_choice


class ChoiceVoteAggregator(VoteAggregator):
    def key(self, text: str) -> str | None:
        return extract_choice(text)
