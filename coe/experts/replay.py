"""Replay experts: recorded outputs of real models, answered offline.

A replay directory holds ``<model>.jsonl.gz`` files (gzip JSON lines
``{"question_id": int, "pred": ..., "response": str}``) and ``models.json`` (parameters, kind,
family and price of each model). Each file becomes an expert named ``<model>`` that answers
with the recorded ``response``; ``pred`` is never read. A model's file is read the first time
its expert answers or its question ids are asked for (synchronously: ~0.1 s per 8.4k-line file,
once).

Requests find their question by ``metadata["question_id"]``, else by text (``metadata["question"]``
or the last user message, whose last ``Question:``/``Options:`` block is matched against the
questions given to :meth:`ReplayBank.index_questions`). A question the model never answered, or
text matching several recorded questions, raises ``UnknownQuestion``: never a guess.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from coe.errors import ConfigError, UnknownQuestion, UserError
from coe.experts.base import Emit, ExpertClient
from coe.questions.datasets import Question
from coe.questions.extract import LETTERS
from coe.questions.prompts import split_prompt
from coe.questions.tokens import TokenCounter
from coe.types import Chunk, Completion, ExpertRequest, Messages, Usage

__all__ = ["ModelInfo", "ReplayBank", "ReplayExpert", "normalise_text"]

_SUFFIX = ".jsonl.gz"
_HEADING = "Question:"
_OPTIONS = "\nOptions:"
_ANSWER = "\nAnswer:"


class Price(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: float
    completion: float


class ModelInfo(BaseModel):
    """One model's entry in ``models.json``; prices in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="allow")

    params_b: float | None
    active_params_b: float | None = None
    kind: str
    family: str
    price_per_mtok: Price


class _ModelsFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    models: dict[str, ModelInfo]


def normalise_text(text: str) -> str:
    """Casefold and collapse whitespace: the key of the question-text index."""
    return " ".join(text.casefold().split())


class ReplayBank:
    """The recorded outputs of a replay directory, read lazily per model."""

    def __init__(self, directory: Path, files: Mapping[str, Path], info: Mapping[str, ModelInfo]) -> None:
        self.directory = directory
        self._files = dict(files)
        self._info = dict(info)
        self._responses: dict[str, dict[int, str]] = {}
        self._ids: dict[str, frozenset[int]] = {}
        self._by_text: dict[str, list[tuple[int, str]]] = {}

    @classmethod
    def load(cls, directory: str | Path) -> ReplayBank:
        """List ``DIR/<model>.jsonl.gz`` and read ``DIR/models.json`` (no output is read yet)."""
        root = Path(directory)
        if not root.is_dir():
            raise UserError(f"replay directory not found: {root}")
        files = {p.name[: -len(_SUFFIX)]: p for p in root.glob(f"*{_SUFFIX}") if p.is_file()}
        if not files:
            raise UserError(f"no <model>{_SUFFIX} files in replay directory {root}")
        return cls(root, files, _read_models(root / "models.json"))

    @property
    def names(self) -> list[str]:
        return sorted(self._files)

    def info(self, name: str) -> ModelInfo:
        self._check(name)
        if name not in self._info:
            raise ConfigError(f"{self.directory / 'models.json'}: models.{name}: missing entry")
        return self._info[name]

    def price(self, name: str) -> tuple[float, float]:
        """USD per million prompt and completion tokens."""
        price = self.info(name).price_per_mtok
        return price.prompt, price.completion

    def question_ids(self, name: str) -> frozenset[int]:
        if name not in self._ids:
            self._ids[name] = frozenset(self._recorded(name))
        return self._ids[name]

    def response(self, name: str, question_id: int) -> str:
        """The recorded response, or ``UnknownQuestion``."""
        recorded = self._recorded(name)
        if question_id not in recorded:
            raise UnknownQuestion(f"replay expert {name!r} holds no output for question_id {question_id}")
        return recorded[question_id]

    def expert(self, name: str, token_counter: TokenCounter) -> ReplayExpert:
        self.price(name)  # fail now, not at the first call, when the model has no price
        return ReplayExpert(self, name, token_counter)

    def index_questions(self, questions: Iterable[Question]) -> None:
        """Let experts find questions by text when a request carries no ``question_id``."""
        for question in questions:
            options = _options_text(question.options)
            entry = (question.question_id, options)
            self._by_text.setdefault(normalise_text(question.question), []).append(entry)

    def find_question_id(self, name: str, text: str) -> int:
        """The id of the question ``text`` asks (a bare question or a whole prompt)."""
        if not self._by_text:
            raise UnknownQuestion(
                f"replay expert {name!r}: the request has no metadata question_id and no questions "
                "were indexed to find it by text (ReplayBank.index_questions)"
            )
        question, options = _last_question(text)
        candidates = self._by_text.get(normalise_text(question), [])
        if options is not None:
            candidates = [c for c in candidates if c[1] == normalise_text(options)]
        recorded = self._recorded(name)
        ids = sorted({qid for qid, _ in candidates if qid in recorded})
        if len(ids) == 1:
            return ids[0]
        shown = normalise_text(question)[:80]
        if not ids:
            raise UnknownQuestion(f"replay expert {name!r} holds no output for question {shown!r}")
        raise UnknownQuestion(
            f"replay expert {name!r}: question {shown!r} matches question_ids {ids}; "
            "pass metadata question_id"
        )

    def _check(self, name: str) -> None:
        if name not in self._files:
            have = ", ".join(self.names)
            raise UserError(f"no replay expert {name!r} in {self.directory} (have: {have})")

    def _recorded(self, name: str) -> dict[int, str]:
        self._check(name)
        if name not in self._responses:
            self._responses[name] = _read_outputs(self._files[name])
        return self._responses[name]


class ReplayExpert(ExpertClient):
    """Answers with a model's recorded response; usage counted with one offline tokenizer."""

    def __init__(self, bank: ReplayBank, name: str, token_counter: TokenCounter) -> None:
        self.bank = bank
        self.name = name
        self.token_counter = token_counter

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        """The recorded response as one chunk (it was generated long ago)."""
        yield self.answer(request)

    async def complete(self, request: ExpertRequest, emit: Emit | None = None) -> Completion:
        chunk = self.answer(request)  # no stream to join: bulk evaluation calls this millions of times
        if emit is not None:
            emit(chunk.text)
        assert chunk.usage is not None
        return Completion(chunk.text, chunk.usage)

    def answer(self, request: ExpertRequest) -> Chunk:
        started = time.perf_counter()
        response = self.bank.response(self.name, self._question_id(request))
        prompt_tokens = _count_messages(self.token_counter, request.messages)
        completion_tokens = self.token_counter.count(response)
        prompt_price, completion_price = self.bank.price(self.name)
        cost = prompt_tokens * prompt_price / 1e6 + completion_tokens * completion_price / 1e6
        usage = Usage(prompt_tokens, completion_tokens, cost, time.perf_counter() - started)
        return Chunk(response, usage, "stop")

    def _question_id(self, request: ExpertRequest) -> int:
        metadata = request.metadata
        if metadata.get("question_id") is not None:
            return _as_question_id(self.name, metadata["question_id"])
        text = metadata.get("question")
        if not isinstance(text, str) or not text.strip():
            text = _last_user_text(request.messages)
        if text is None:
            raise UnknownQuestion(f"replay expert {self.name!r}: the request holds no question")
        return self.bank.find_question_id(self.name, text)


def _count_messages(counter: TokenCounter, messages: Messages) -> int:
    return sum(counter.count_prompt(*split_prompt(m["content"])) for m in messages)


def _as_question_id(expert: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise UnknownQuestion(f"replay expert {expert!r}: question_id {value!r} is not an integer")


def _last_user_text(messages: Messages) -> str | None:
    for message in reversed(messages):
        if message["role"] == "user" and message["content"].strip():
            return message["content"]
    return None


def _last_question(text: str) -> tuple[str, str | None]:
    """Question and options of a prompt's last ``Question:`` block, else the whole text."""
    start = text.rfind(_HEADING)
    while start > 0 and text[start - 1] != "\n":
        start = text.rfind(_HEADING, 0, start)
    if start < 0:
        return text, None
    block = text[start + len(_HEADING) :]
    options_at = block.find(_OPTIONS)
    if options_at < 0:
        return block, None
    options = block[options_at + len(_OPTIONS) :]
    answer_at = options.find(_ANSWER)
    return block[:options_at], options if answer_at < 0 else options[:answer_at]


def _options_text(options: Iterable[str]) -> str:
    return normalise_text(" ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options)))


def _read_models(path: Path) -> dict[str, ModelInfo]:
    if not path.is_file():
        return {}
    try:
        return _ModelsFile.model_validate_json(path.read_bytes()).models
    except ValidationError as err:
        problems = [f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(problems) from err


def _read_outputs(path: Path) -> dict[int, str]:
    responses: dict[int, str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                responses[int(record["question_id"])] = str(record["response"])
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"{path}:{number}: not a replay record: {err}") from err
    return responses
