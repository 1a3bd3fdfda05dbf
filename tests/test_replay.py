"""Replay experts over the committed slice of recorded MMLU-Pro outputs."""

from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

import pytest

from coe.errors import ConfigError, UnknownQuestion, UserError
from coe.experts import replay
from coe.experts.replay import ReplayBank
from coe.questions.datasets import Question, load_mmlu_pro, load_validation_shots
from coe.questions.extract import extract_choice
from coe.questions.prompts import build_messages
from coe.questions.tokens import TokenCounter
from coe.types import ExpertRequest, Message

DATA = Path(__file__).parent / "data" / "mmlu_pro"
OUTPUTS = DATA / "outputs"
MODELS = ["Meta-Llama-3_1-8B-Instruct", "Mistral-7B-Instruct-v0.2", "gemma-7b"]
SHARED_OUTPUTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu_pro" / "outputs"


@pytest.fixture(scope="module")
def questions() -> list[Question]:
    return load_mmlu_pro(DATA / "test_slice.jsonl")


@pytest.fixture(scope="module")
def shots() -> dict[str, list[Question]]:
    return load_validation_shots(DATA)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def recorded(model: str) -> dict[int, str]:
    with gzip.open(OUTPUTS / f"{model}.jsonl.gz", "rt", encoding="utf-8") as lines:
        return {r["question_id"]: r["response"] for r in map(json.loads, lines)}


def test_names_prices_and_ids(questions: list[Question]) -> None:
    bank = ReplayBank.load(OUTPUTS)
    assert bank.names == MODELS
    entry = json.loads((OUTPUTS / "models.json").read_text())["models"]["gemma-7b"]
    assert bank.price("gemma-7b") == (
        entry["price_per_mtok"]["prompt"],
        entry["price_per_mtok"]["completion"],
    )
    assert bank.info("gemma-7b").kind == "base"
    for name in MODELS:
        assert bank.question_ids(name) == {q.question_id for q in questions}


def test_files_are_read_lazily(monkeypatch: pytest.MonkeyPatch, counter: TokenCounter) -> None:
    reads: list[str] = []
    real = replay._read_outputs

    def counting(path: Path) -> dict[int, str]:
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(replay, "_read_outputs", counting)
    bank = ReplayBank.load(OUTPUTS)
    expert = bank.expert("gemma-7b", counter)
    bank.price("Mistral-7B-Instruct-v0.2")
    assert reads == []
    assert expert.name == "gemma-7b"
    bank.question_ids("gemma-7b")
    bank.response("gemma-7b", min(bank.question_ids("gemma-7b")))
    assert reads == ["gemma-7b.jsonl.gz"]


@pytest.mark.asyncio
async def test_by_id_with_usage_and_cost(
    questions: list[Question], shots: dict[str, list[Question]], counter: TokenCounter
) -> None:
    bank = ReplayBank.load(OUTPUTS)
    expert = bank.expert("Meta-Llama-3_1-8B-Instruct", counter)
    responses = recorded("Meta-Llama-3_1-8B-Instruct")
    prompt_price, completion_price = bank.price(expert.name)
    for question in questions[:20]:
        messages = build_messages(question, shots[question.category])
        request = ExpertRequest(messages=messages, metadata={"question_id": question.question_id})
        completion = await expert.complete(request)
        assert completion.content == responses[question.question_id]
        usage = completion.usage
        assert usage.prompt_tokens == counter.count(messages[0]["content"])
        assert usage.completion_tokens == counter.count(completion.content)
        expected = usage.prompt_tokens * prompt_price / 1e6 + usage.completion_tokens * completion_price / 1e6
        assert usage.cost == pytest.approx(expected)
        assert 0 <= usage.latency_s < 1.0


@pytest.mark.asyncio
async def test_by_text(
    questions: list[Question], shots: dict[str, list[Question]], counter: TokenCounter
) -> None:
    bank = ReplayBank.load(OUTPUTS)
    bank.index_questions(questions)
    expert = bank.expert("gemma-7b", counter)
    responses = recorded("gemma-7b")
    for question in questions[::7]:
        want = responses[question.question_id]
        five_shot = build_messages(question, shots[question.category])
        assert (await expert.complete(ExpertRequest(messages=five_shot))).content == want
        bare = ExpertRequest(messages=[{"role": "user", "content": f"  {question.question.upper()} "}])
        assert (await expert.complete(bare)).content == want
        hinted = ExpertRequest(messages=five_shot, metadata={"question": question.question})
        assert (await expert.complete(hinted)).content == want
        by_str_id = ExpertRequest(messages=five_shot, metadata={"question_id": str(question.question_id)})
        assert (await expert.complete(by_str_id)).content == want


@pytest.mark.asyncio
async def test_unknown_question_raises(questions: list[Question], counter: TokenCounter) -> None:
    bank = ReplayBank.load(OUTPUTS)
    expert = bank.expert("gemma-7b", counter)
    unindexed = ExpertRequest(messages=build_messages(questions[0], style="cot0"))
    with pytest.raises(UnknownQuestion, match="no metadata question_id"):
        await expert.complete(unindexed)
    bank.index_questions(questions)
    hello: list[Message] = [{"role": "user", "content": "What is the capital of France?"}]
    with pytest.raises(UnknownQuestion, match=r"'gemma-7b'.*question_id 999999"):
        await expert.complete(ExpertRequest(messages=hello, metadata={"question_id": 999999}))
    with pytest.raises(UnknownQuestion, match=r"gemma-7b.*capital of france"):
        await expert.complete(ExpertRequest(messages=hello))
    other_options = Question(0, questions[0].question, ("yes", "no"), "A", questions[0].category)
    with pytest.raises(UnknownQuestion, match="holds no output"):
        await expert.complete(ExpertRequest(messages=build_messages(other_options, style="cot0")))


@pytest.mark.asyncio
async def test_duplicate_texts_are_told_apart_by_options(
    questions: list[Question], counter: TokenCounter
) -> None:
    first, second = questions[0], questions[1]
    twin = Question(second.question_id, first.question, second.options, "A", first.category)
    bank = ReplayBank.load(OUTPUTS)
    bank.index_questions([first, twin])
    expert = bank.expert("gemma-7b", counter)
    responses = recorded("gemma-7b")
    for question in (first, twin):
        request = ExpertRequest(messages=build_messages(question, style="cot0"))
        assert (await expert.complete(request)).content == responses[question.question_id]
    bare = ExpertRequest(messages=[{"role": "user", "content": first.question}])
    with pytest.raises(UnknownQuestion, match="matches question_ids"):
        await expert.complete(bare)


@pytest.mark.asyncio
async def test_replayed_accuracy_matches_reference(
    questions: list[Question], shots: dict[str, list[Question]], counter: TokenCounter
) -> None:
    expected = json.loads((DATA / "expected_accuracy.json").read_text())["models"]
    bank = ReplayBank.load(OUTPUTS)
    for name in MODELS:
        expert = bank.expert(name, counter)
        correct = 0
        for question in questions:
            messages = build_messages(question, shots[question.category])
            request = ExpertRequest(messages=messages, metadata={"question_id": question.question_id})
            correct += extract_choice((await expert.complete(request)).content) == question.answer
        assert correct == expected[name]["correct"], name


def test_bad_directories(tmp_path: Path, counter: TokenCounter) -> None:
    with pytest.raises(UserError, match="not found"):
        ReplayBank.load(tmp_path / "missing")
    with pytest.raises(UserError, match=r"no <model>\.jsonl\.gz"):
        ReplayBank.load(tmp_path)
    shutil.copy(OUTPUTS / "gemma-7b.jsonl.gz", tmp_path)
    bank = ReplayBank.load(tmp_path)  # no models.json: listed, but cannot be priced
    with pytest.raises(ConfigError, match=r"models\.gemma-7b"):
        bank.expert("gemma-7b", counter)
    with pytest.raises(UserError, match="no replay expert 'nope'"):
        bank.question_ids("nope")
    (tmp_path / "models.json").write_text(json.dumps({"models": {"gemma-7b": {"kind": "base"}}}))
    with pytest.raises(ConfigError, match=r"models\.gemma-7b\.family"):
        ReplayBank.load(tmp_path)


def test_corrupt_record(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "m.jsonl.gz", "wt") as out:
        out.write('{"question_id": 1, "response": "x"}\n{"question_id": 2}\n')
    with pytest.raises(ConfigError, match=r"m\.jsonl\.gz:2"):
        ReplayBank.load(tmp_path).question_ids("m")


@pytest.mark.skipif(not SHARED_OUTPUTS.is_dir(), reason=f"full replay outputs not at {SHARED_OUTPUTS}")
def test_full_file_loads_fast(timings: dict[str, float]) -> None:
    bank = ReplayBank.load(SHARED_OUTPUTS)
    started = time.perf_counter()
    ids = bank.question_ids("Meta-Llama-3_1-8B-Instruct")
    elapsed = time.perf_counter() - started
    timings["replay: read one model's outputs (8,446 lines)"] = elapsed
    assert len(ids) == 8446
    assert elapsed < 3.0
