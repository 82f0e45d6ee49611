"""django-q2 entry points: they take ids, call the engine, and never raise."""

import logging

from batches import webhooks
from batches.engine import runner
from batches.engine.sweep import sweep_scheduled
from batches.ingest import sources

logger = logging.getLogger(__name__)


def chunk_run(chunk_id: int) -> str:
    """Process one chunk.

    Never raises: django-q2 would retry a raising task on its own clock, while our lease
    and sweep already decide when a chunk runs again.
    """
    try:
        return runner.chunk_process(chunk_id=chunk_id)
    except Exception:
        logger.exception("chunk %s stopped on an unexpected error; its lease will expire", chunk_id)
        return "error"


def sweep() -> dict:
    """Run the periodic sweep; never raises, so the schedule keeps its rhythm."""
    try:
        return sweep_scheduled()
    except Exception:
        logger.exception("sweep stopped on an unexpected error; the next run will retry")
        return {"error": 1}


def source_ingest(batch_id: str) -> str:
    """Download and read a batch's source file; never raises."""
    try:
        return sources.source_ingest(batch_id=batch_id)
    except Exception:
        logger.exception("reading the source of batch %s failed; the sweep will retry", batch_id)
        return "error"


def webhook_deliver(delivery_id: str) -> str:
    """Make one try at a webhook delivery; never raises.

    A try that crashes keeps its lease until it expires; the sweep then hands the
    delivery out again.
    """
    try:
        return webhooks.deliver(delivery_id)
    except Exception:
        logger.exception("webhook delivery %s stopped on an unexpected error", delivery_id)
        return "error"
