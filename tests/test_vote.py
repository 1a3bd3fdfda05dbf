"""VoteAggregator: majority by choice letter or final number, ties to the first listed, weights,
and the closest answer when no candidate commits to a key."""

from __future__ import annotations

import pytest

from coe.aggregators import AGGREGATORS
from coe.aggregators.vote import VoteAggregator, answer_key
from coe.errors import UserError
from coe.types import Candidate, Message

pytestmark = pytest.mark.asyncio
QUESTION: list[Message] = [{"role": "user", "content": "Which one?"}]


def cands(*contents: str, weights: tuple[float, ...] = ()) -> list[Candidate]:
    weights = weights or (1.0,) * len(contents)
    return [
        Candidate(f"e{i}", text, weight=w) for i, (text, w) in enumerate(zip(contents, weights, strict=True))
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Let me think. The answer is (C).", "C"),
        ("the answer is: D", "D"),
        ("ANSWER: b", None),  # lower-case letters are words, not choices
        ("Answer: J", "J"),
        ("(B)", "B"),
        (" E. ", "E"),
        ("The answer is a prime number, 7.", "7"),
        ("the answer is e^x", None),
        ("2 + 2 = 4", "4"),
        ("I think it is 4.0", "4"),
        ("It costs 1,250.50 dollars", "1250.5"),
        ("-3 degrees", "-3"),
        ("Blue, like the sky.", None),
        ("", None),
    ],
)
async def test_answer_key(text: str, key: str | None) -> None:
    assert answer_key(text) == key


async def test_majority_by_letter() -> None:
    result = await VoteAggregator().aggregate(
        QUESTION, cands("The answer is (A)", "Answer: B", "I am sure the answer is B.")
    )
    assert result.content == "Answer: B"
    assert result.chosen == ("e1", "e2")
    assert result.detail["method"] == "vote"
    assert result.detail["key"] == "B"
    assert result.detail["tally"] == {"A": 1.0, "B": 2.0}
    assert result.detail["keys"] == ["A", "B", "B"]


async def test_majority_by_number() -> None:
    result = await VoteAggregator().aggregate(QUESTION, cands("2 + 2 = 5", "It is 4.", "four, that is 4.0"))
    assert result.content == "It is 4."
    assert result.chosen == ("e1", "e2")
    assert result.detail["key"] == "4"


async def test_tie_goes_to_first_listed() -> None:
    result = await VoteAggregator().aggregate(QUESTION, cands("No idea.", "answer is C", "answer is A"))
    assert result.content == "answer is C"
    assert result.chosen == ("e1",)
    result = await VoteAggregator().aggregate(QUESTION, cands("answer is A", "answer is C"))
    assert result.chosen == ("e0",)


async def test_no_key_picks_the_closest_answer() -> None:
    result = await VoteAggregator().aggregate(QUESTION, cands("red", "red green", "red green blue"))
    assert result.content == "red green"  # the most similar to the others on average
    assert result.chosen == ("e1",)
    assert result.detail == {"method": "closest", "keys": [None, None, None]}


async def test_no_key_tie_goes_to_first_listed() -> None:
    result = await VoteAggregator().aggregate(QUESTION, cands("same words", "same words"))
    assert result.chosen == ("e0",)


async def test_weights() -> None:
    candidates = cands("answer is A", "answer is B", "answer is B", weights=(3.0, 1.0, 1.0))
    result = await VoteAggregator().aggregate(QUESTION, candidates)
    assert result.chosen == ("e0",)
    assert result.detail["tally"] == {"A": 3.0, "B": 2.0}


async def test_candidates_without_key_do_not_vote() -> None:
    result = await VoteAggregator().aggregate(
        QUESTION, cands("I cannot say.", "Maybe so.", "The answer is D")
    )
    assert result.content == "The answer is D"
    assert result.chosen == ("e2",)


async def test_one_candidate() -> None:
    result = await VoteAggregator().aggregate(QUESTION, cands("just this"))
    assert (result.content, result.chosen) == ("just this", ("e0",))


async def test_no_candidates() -> None:
    with pytest.raises(UserError):
        await VoteAggregator().aggregate(QUESTION, [])


async def test_registered_by_name() -> None:
    assert AGGREGATORS.get("vote") is VoteAggregator
    with pytest.raises(UserError, match="unknown aggregator"):
        AGGREGATORS.get("nope")
