"""``report.md`` and PNG plots: the graph beside every expert it could call, per category,
with the best single expert and the oracle (best possible pick among those experts)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coe.errors import ExpertError
from coe.questions.datasets import Question
from coe.questions.extract import extract_choice
from coe.types import ExpertRequest

if TYPE_CHECKING:
    from coe.eval.runner import EvalRun


@dataclass(slots=True)
class ExpertRecord:
    """One expert's predictions and cost on the evaluated questions (where known)."""

    predictions: dict[int, str | None] = field(default_factory=dict)
    cost: float = 0.0


async def expert_records(
    run: EvalRun, questions: Sequence[Question], shots: dict[str, list[Question]], rows: Mapping[int, Any]
) -> dict[str, ExpertRecord]:
    """Predictions of every callable expert: from the run's calls, and for replayed experts the
    recorded answer on every question (so best-single and oracle cover the same questions)."""
    records = {name: ExpertRecord() for name in run.callable}
    for qid, row in rows.items():
        for name, pred in row.get("expert_predictions", {}).items():
            if name in records:
                records[name].predictions[qid] = pred
                records[name].cost += row.get("expert_costs", {}).get(name, 0.0)
    for name in run.replayed:
        if name not in records:
            continue
        client = run.pool.client(name)
        record = records[name]
        for question in questions:
            if question.question_id in record.predictions:
                continue
            request = ExpertRequest(
                run.messages(question, shots),
                metadata=question.metadata(),
            )
            try:
                completion = await client.complete(request)
            except ExpertError:  # a recorded empty answer, say: no choice, as MMLU-Pro scores it
                record.predictions[question.question_id] = None
                continue
            record.predictions[question.question_id] = extract_choice(completion.content)
            record.cost += completion.usage.cost
    return records


def _acc(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def compare(
    questions: Sequence[Question], rows: Mapping[int, Any], records: Mapping[str, ExpertRecord]
) -> dict[str, Any]:
    gold = {q.question_id: q.answer for q in questions if q.question_id in rows}
    full = [n for n, r in records.items() if all(qid in r.predictions for qid in gold)]
    cats: dict[str, list[int]] = defaultdict(list)
    for q in questions:
        if q.question_id in gold:
            cats[q.category].append(q.question_id)
    table: dict[str, dict[str, float | None]] = {}
    for cat, qids in [*sorted(cats.items()), ("overall", list(gold))]:
        line: dict[str, float | None] = {
            "n": float(len(qids)),
            "graph": _acc([rows[q]["correct"] for q in qids]),
        }
        for name, rec in records.items():
            line[name] = _acc([rec.predictions[q] == gold[q] for q in qids if q in rec.predictions])
        line["oracle"] = (
            _acc([any(records[n].predictions[q] == gold[q] for n in full) for q in qids]) if full else None
        )
        table[cat] = line
    overall = table["overall"]
    best = max(full, key=lambda n: overall[n] or 0.0) if full else None
    return {"table": table, "full": full, "best": best}


def _roles_table(summary: Mapping[str, Any]) -> list[str]:
    """What each role of call cost, beside the accuracy: answer (routed or single experts),
    propose, roles (role generation), judge, aggregate, annotate."""
    roles: Mapping[str, Mapping[str, float]] = summary.get("roles") or {}
    if not roles:
        return []
    n = max(summary["n"], 1)
    total = summary["cost"] or 0.0
    accuracy = f"accuracy {_fmt(summary['accuracy'])}% over {summary['n']} questions"
    header = ["role", "calls", "per question", "prompt tokens", "completion tokens", "cost (USD)"]
    header += ["share of cost", "latency (s)"]
    lines = [
        "",
        f"Calls, tokens and cost per role ({accuracy}):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for role, v in roles.items():
        share = f"{100 * v['cost'] / total:.1f}%" if total else "—"
        lines.append(
            f"| {role} | {int(v['calls'])} | {v['calls'] / n:.2f} | {int(v['prompt_tokens'])} | "
            f"{int(v['completion_tokens'])} | {v['cost']:.6f} | {share} | {v['latency_s']:.1f} |"
        )
    sums = {
        k: sum(v[k] for v in roles.values()) for k in ("calls", "prompt_tokens", "completion_tokens", "cost")
    }
    lines.append(
        f"| **all** | {int(sums['calls'])} | {sums['calls'] / n:.2f} | {int(sums['prompt_tokens'])} | "
        f"{int(sums['completion_tokens'])} | {sums['cost']:.6f} | 100% | |"
    )
    return lines


def _markdown(
    summary: Mapping[str, Any], comparison: Mapping[str, Any], records: Mapping[str, ExpertRecord]
) -> str:
    table = comparison["table"]
    names = list(records)
    best = comparison["best"]
    overall = table["overall"]
    lines = [
        f"# coe eval: `{summary['graph']}` on {summary['dataset']}",
        "",
        f"- questions: {summary['n']}; accuracy **{_fmt(summary['accuracy'])}%**; "
        f"unparsable answers: {summary['unparsable']}; failed questions: {summary.get('errors', 0)}",
        f"- expert calls: {summary['expert_calls']} ({summary['calls_per_question']} per question)",
        f"- cost: ${summary['cost']:.4f} ({summary['tokens']['prompt']} prompt + "
        f"{summary['tokens']['completion']} completion tokens, counted with {summary['tokenizer']})",
        f"- model loads: {summary['model_loads']}; wall time {summary['wall_s']} s",
    ]
    if best is not None:
        lines.append(
            f"- best single expert: `{best}` {_fmt(overall[best])}% (${records[best].cost:.4f}); "
            f"oracle over {len(comparison['full'])} experts: {_fmt(overall['oracle'])}%"
        )
        delta = (summary["accuracy"] - (overall[best] or 0.0)) * 100
        lines.append(f"- graph vs best single: {delta:+.1f} points")
    lines += _roles_table(summary)
    header = ["category", "n", "graph", *names, "oracle"]
    lines += [
        "",
        "Accuracy (%) per category, on the same questions:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for cat, line in table.items():
        cells = [
            cat,
            str(int(line["n"] or 0)),
            _fmt(line["graph"]),
            *(_fmt(line[n]) for n in names),
            _fmt(line["oracle"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cost (USD) of each expert over these questions: "
        + ", ".join(f"`{n}` ${r.cost:.4f}" for n, r in records.items()),
        "",
        "![per-category accuracy](per_category.png)",
        "",
        "![cost vs accuracy](cost_accuracy.png)",
        "",
    ]
    return "\n".join(lines)


def _plots(
    summary: Mapping[str, Any], comparison: Mapping[str, Any], records: Mapping[str, ExpertRecord], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = comparison["table"]
    cats = [c for c in table if c != "overall"]
    series = {"graph": [table[c]["graph"] or 0.0 for c in cats]}
    if comparison["best"]:
        series[f"best single ({comparison['best']})"] = [table[c][comparison["best"]] or 0.0 for c in cats]
        series["oracle"] = [table[c]["oracle"] or 0.0 for c in cats]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(cats) + 2), 4.5))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(cats))], [100 * v for v in values], width, label=label)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(cats))], cats, rotation=45, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{summary['graph']} on {summary['dataset']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "per_category.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    overall = table["overall"]
    for name, rec in records.items():
        if overall.get(name) is not None:
            ax.scatter(rec.cost, 100 * (overall[name] or 0.0), color="tab:blue")
            ax.annotate(name, (rec.cost, 100 * (overall[name] or 0.0)), fontsize=7)
    ax.scatter(summary["cost"], 100 * summary["accuracy"], color="tab:red", marker="*", s=160)
    ax.annotate(f"graph {summary['graph']}", (summary["cost"], 100 * summary["accuracy"]), fontsize=8)
    ax.set_xlabel("cost over these questions (USD)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("cost vs accuracy")
    fig.tight_layout()
    fig.savefig(out / "cost_accuracy.png", dpi=100)
    plt.close(fig)


async def write_report(
    run: EvalRun,
    questions: Sequence[Question],
    shots: dict[str, list[Question]],
    rows: Mapping[int, Any],
    summary: dict[str, Any],
    out: Path,
) -> None:
    records = await expert_records(run, questions, shots, rows)
    comparison = compare(questions, rows, records)
    summary["comparison"] = {
        "best_single": comparison["best"],
        "best_single_accuracy": comparison["table"]["overall"].get(comparison["best"])
        if comparison["best"]
        else None,
        "oracle_accuracy": comparison["table"]["overall"]["oracle"],
        "experts": {
            n: {"accuracy": comparison["table"]["overall"][n], "cost": round(r.cost, 8)}
            for n, r in records.items()
        },
    }
    from coe.eval.curve import cost_curve
    from coe.eval.results import write_json

    curve = await cost_curve(run, questions, shots, rows, records, out)  # None unless cost-threshold
    if curve is not None:
        summary["cost_curve"] = curve.summary()
    write_json(out / "summary.json", summary)
    text = _markdown(summary, comparison, records) + (curve.markdown() if curve else "")
    (out / "report.md").write_text(text, encoding="utf-8")
    _plots(summary, comparison, records, out)
