"""Pick the dataset loader for ``coe eval`` options and find few-shot examples."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from coe.errors import UserError
from coe.questions.datasets import Question, load_csv, load_gpqa, load_mmlu_pro, load_validation_shots

if TYPE_CHECKING:
    from coe.eval.runner import EvalOptions

MMLU_PRO_HUB = "TIGER-Lab/MMLU-Pro"


def _shots_path(options: EvalOptions) -> str:
    if options.shots_path is not None:
        return str(options.shots_path)
    if options.data_path and Path(options.data_path).exists():
        folder = Path(options.data_path).parent
        for name in ("validation.parquet", "validation.jsonl"):
            if (folder / name).exists():
                return str(folder / name)
        raise UserError(
            f"no validation split beside {options.data_path} for 5-shot prompts: "
            "pass --shots-path or --prompt cot0"
        )
    return options.data_path or MMLU_PRO_HUB


def load_questions(options: EvalOptions) -> tuple[list[Question], dict[str, list[Question]]]:
    if options.dataset == "mmlu-pro":
        questions = load_mmlu_pro(options.data_path or MMLU_PRO_HUB, split=options.split or "test")
        style = options.prompt or "cot5"
        shots = load_validation_shots(_shots_path(options)) if style == "cot5" else {}
        return questions, shots
    if options.dataset == "gpqa":
        if not options.data_path:
            raise UserError("--data-path must name GPQA's dataset.zip")
        subset = options.split or "main"
        if subset not in ("main", "diamond", "extended"):
            raise UserError(f"GPQA split must be main, diamond or extended, not {subset!r}")
        return load_gpqa(Path(options.data_path), subset=subset, seed=options.seed), {}  # type: ignore[arg-type]
    if not options.data_path:
        raise UserError("--data-path must name the CSV file")
    return load_csv(Path(options.data_path)), {}
