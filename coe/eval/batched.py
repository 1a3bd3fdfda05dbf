"""``coe eval --batch``: the evaluation's questions as one batch, answered through the scheduler.

Rows are built by the same ``question_row`` as the online path, from the stored output (answer
and trace), so results, summary and report match; ``model_loads`` comes from the batch's stats.
Replayed experts are answered in the driver (they load nothing); configured experts go through
their streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from coe.batch.connect import batch_redis
from coe.batch.driver import BatchDriver, graph_factory
from coe.batch.run import drive
from coe.batch.store import BatchItem, BatchStore
from coe.batch.worker import Worker
from coe.eval.results import ResultWriter
from coe.pipeline import RunResult, Trace
from coe.questions.datasets import Question

if TYPE_CHECKING:
    from coe.eval.runner import EvalRun


def _item(run: EvalRun, question: Question, shots: dict[str, list[Question]]) -> BatchItem:
    return BatchItem(
        str(question.question_id),
        list(run.messages(question, shots)),
        question.answer,
        run.metadata(question),
    )


async def drain_batch(
    run: EvalRun,
    todo: Sequence[Question],
    shots: dict[str, list[Question]],
    writer: ResultWriter,
    rows: dict[int, dict[str, Any]],
) -> dict[str, Any] | None:
    """Answer ``todo`` as one batch, writing each row as its item finishes; returns the batch status."""
    from coe.eval.runner import question_row

    if not todo:
        return None
    by_id = {str(q.question_id): q for q in todo}

    def on_output(item: BatchItem, output: dict[str, Any]) -> None:
        question = by_id[item.id]
        if output.get("error"):
            row = question_row(question, None, output["error"])
        else:
            trace = Trace(run.loaded.name)
            trace.calls = output["trace"]["calls"]
            row = question_row(question, RunResult(output["content"], trace), keep=frozenset(run.live))
        writer.write(row)
        rows[question.question_id] = row

    async with batch_redis(run.settings) as (redis, local):
        batch_id = await BatchStore(redis).create(
            run.loaded.name,
            [_item(run, q, shots) for q in todo],
            pool=run.pool_names,
            max_tokens=run.options.max_tokens,
            adoptable=False,  # replayed experts and the result file live in this process
        )
        driver = BatchDriver(
            redis,
            batch_id,
            graph_factory(run.loaded, run.pool_names),
            queued=run.live,
            direct=run.pool,
            lease_s=run.settings.batch_lease_s,
            on_output=on_output,
        )
        worker = None
        if local and run.live:
            worker = Worker(redis, run.settings, [run.pool.configs[n] for n in run.live])
        return await drive(driver, worker)
