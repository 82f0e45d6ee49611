"""django-q2 entry points: they take ids, call the engine, and never raise."""

import copy
import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from batches import webhooks
from batches.engine import runner
from batches.engine.sweep import sweep_scheduled
from batches.ingest import sources

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def never_raises(log: str, *, result: R) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Make a task log any exception with `log` (%-formatted with its arguments) and
    return `result` instead of raising.

    django-q2 would retry a raising task on its own clock, while our leases and the
    sweep already decide when work runs again.
    """

    def decorate(task: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(task)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return task(*args, **kwargs)
            except Exception:
                logger.exception(log, *args, *kwargs.values())
                return copy.deepcopy(result)  # a fresh one, for a result the caller may change

        return run

    return decorate


@never_raises("chunk %s stopped on an unexpected error; its lease will expire", result="error")
def chunk_run(chunk_id: int) -> str:
    """Process one chunk, then chunks whose tasks are still waiting, while time allows."""
    return runner.chunks_process(chunk_id=chunk_id)


@never_raises("sweep stopped on an unexpected error; the next run will retry", result={"error": 1})
def sweep() -> dict:
    """Run the periodic sweep; the schedule keeps its rhythm."""
    return sweep_scheduled()


@never_raises("reading the source of batch %s failed; the sweep will retry", result="error")
def source_ingest(batch_id: str) -> str:
    """Download and read a batch's source file."""
    return sources.source_ingest(batch_id=batch_id)


@never_raises("webhook delivery %s stopped on an unexpected error", result="error")
def webhook_deliver(delivery_id: str) -> str:
    """Make one try at a webhook delivery.

    A try that crashes keeps its lease until it expires; the sweep then hands the
    delivery out again.
    """
    return webhooks.deliver(delivery_id)
