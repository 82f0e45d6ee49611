"""Run one item for a worker: its attempts, retries, time limit and output files.

Whatever the job type does, an item ends in an Outcome, a success or a failure with an
error code; a crashing job type fails its item, never the worker.
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from django.utils import timezone

from batches import files
from batches.engine.finalize import DEFERRED_RESULT
from batches.ingest import bulk
from batches.models import Item
from jobs import JobContext, JobType, PermanentError, TransientError, get_job_type
from jobs.timelimit import ItemTimeout, time_limit

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """What running one item produced."""

    item_id: int
    index: int
    status: str
    attempts: int
    result_json: str | None = None
    error_code: str = ""
    error_message: str = ""
    output_files_json: str = bulk.EMPTY_LIST_JSON
    finished_at: Any = None
    # The item's status when its slice was taken: where it is counted until written.
    was: str = Item.Status.RUNNING
    # Set with `was` by the runner, for the item.failed webhook.
    external_id: str = ""


class ItemRow(TypedDict):
    """The fields of an item a worker reads to run it."""

    id: int
    index: int
    status: str
    external_id: str
    type: str
    payload: Any
    input_file: str
    attempts: int


def outputs_store(*, batch_id: uuid.UUID, outputs: list[tuple[str, Path]]) -> list[str]:
    """Save an attempt's output files into storage; return their storage names, in order.

    On a failure the files saved so far are deleted again and the error raised.
    """
    stored: list[str] = []
    try:
        for _, path in outputs:
            name = f"{files.outputs_prefix(batch_id)}/{path.name}"
            stored.append(files.file_store(path, name))
    except BaseException:
        files.files_delete(stored)
        raise
    return stored


def outputs_json(outputs: list[tuple[str, Path]], stored: list[str]) -> str:
    """Serialize a job's output files as [{"name", "path"}], paths being storage names."""
    if not outputs:
        return bulk.EMPTY_LIST_JSON
    return bulk.json_text(
        [{"name": name, "path": path} for (name, _), path in zip(outputs, stored, strict=True)]
    )


class ItemRunner:
    """Run the items of one batch, one at a time."""

    def __init__(self, *, batch_id: uuid.UUID, atomic: bool):
        self.batch_id = batch_id
        # Attempts' folders: this runner's own tag and a count, kept a string (making a Path
        # for every item cost a worker of quick items about 5 % of its time).
        self.scratch_base = str(files.scratch_dir() / uuid.uuid4().hex)
        self.scratch_count = itertools.count()
        # In an atomic batch a job type that defers its effect only prepares it here.
        self.atomic = atomic

    def run(self, row: ItemRow) -> Outcome:
        """Run the item to a success or a failure: retried, timed, never raising."""
        job_type = get_job_type(row["type"])
        attempts = row["attempts"]
        if job_type is None:
            return self._failed(row, attempts, "unknown_type", f"job type {row['type']!r} is gone")
        limit = job_type.time_limit_for(row["payload"])
        while True:
            attempts += 1
            # Each attempt writes its outputs to a local folder of its own (made by the first
            # output_path call); only a success saves them into storage, and the folder goes
            # whatever happens.
            scratch = f"{self.scratch_base}-{next(self.scratch_count)}"
            context = JobContext(
                attempt=attempts,
                label=f"{self.batch_id}#{row['index']}",
                input_name=row["external_id"] if row["input_file"] else "",
                output_dir=scratch,
            )
            try:
                outcome = self._attempt(job_type, row, context, attempts, limit)
            finally:
                if context.outputs:
                    shutil.rmtree(scratch, ignore_errors=True)
            if isinstance(outcome, Outcome):
                return outcome
            time.sleep(outcome)

    def _attempt(
        self, job_type: JobType, row: ItemRow, context: JobContext, attempts: int, limit: float
    ) -> Outcome | float:
        """Run one attempt; return its Outcome, or the seconds to wait before the next one."""
        try:
            with time_limit(limit):
                result = self._call(job_type, row, context)
        except ItemTimeout:
            message = f"took longer than its time limit of {limit:g}s"
            if not job_type.timeouts_transient:
                return self._failed(row, attempts, "timeout", message)
            if attempts >= job_type.max_attempts:
                message = f"gave up after {attempts} attempts: {message}"
                return self._failed(row, attempts, "timeout", message)
            return self.backoff(job_type, attempts)
        except TransientError as exc:
            if attempts >= job_type.max_attempts:
                message = f"gave up after {attempts} attempts: {exc.message}"
                return self._failed(row, attempts, exc.code, message)
            return self.backoff(job_type, attempts)
        except PermanentError as exc:
            return self._failed(row, attempts, exc.code, exc.message)
        except Exception as exc:  # a crashing job type fails its item, never the worker
            logger.warning(
                "item %s crashed: %r",
                context.label,
                exc,
                exc_info=True,
                extra={"batch": str(self.batch_id), "item": row["index"]},
            )
            return self._failed(row, attempts, "exception", f"{type(exc).__name__}: {exc}")
        try:
            result_json = bulk.json_text(result)
        except (TypeError, ValueError) as exc:
            return self._failed(row, attempts, "bad_result", f"result is not JSON: {exc}")
        try:
            stored = outputs_store(batch_id=self.batch_id, outputs=context.outputs)
        except Exception as exc:  # the storage failed us: try the item again, as transient
            logger.warning("item %s: cannot store its output files: %r", context.label, exc)
            if attempts >= job_type.max_attempts:
                message = f"gave up after {attempts} attempts: cannot store output files: {exc}"
                return self._failed(row, attempts, "storage_error", message)
            return self.backoff(job_type, attempts)
        return Outcome(
            item_id=row["id"],
            index=row["index"],
            status=Item.Status.SUCCEEDED,
            attempts=attempts,
            result_json=result_json,
            output_files_json=outputs_json(context.outputs, stored),
            finished_at=timezone.now(),
        )

    def _call(self, job_type: JobType, row: ItemRow, context: JobContext) -> Any:
        if self.atomic and job_type.defer_in_atomic:
            job_type.prepare(row["payload"])
            return DEFERRED_RESULT
        if not row["input_file"]:
            return job_type.process(row["payload"], None, context)
        with files.file_open(row["input_file"]) as file:
            return job_type.process(row["payload"], file, context)

    @staticmethod
    def backoff(job_type: JobType, attempts: int) -> float:
        """Return how long to wait before the next attempt: doubling, capped, jittered."""
        delay = min(job_type.retry_backoff * 2.0 ** (attempts - 1), job_type.retry_backoff_max)
        return delay * random.uniform(0.5, 1.0)

    @staticmethod
    def _failed(row: ItemRow, attempts: int, code: str, message: str) -> Outcome:
        return Outcome(
            item_id=row["id"],
            index=row["index"],
            status=Item.Status.FAILED,
            attempts=attempts,
            error_code=code[:100],
            error_message=message,
            finished_at=timezone.now(),
        )
