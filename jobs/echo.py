"""The `echo` job type: returns its payload; can be told to sleep or fail, for tests and demos."""

import time
from typing import IO, Any

from jobs.base import JobContext, JobType, PermanentError, TransientError

MAX_SLEEP_MS = 600_000


class Echo(JobType):
    """Return the payload unchanged, after the delay and failures it asks for."""

    name = "echo"
    description = (
        "Returns its payload. `fail: true` fails the item permanently, `sleep_ms: N` takes "
        "N milliseconds, `transient_failures: N` fails transiently N times first."
    )
    payload_schema = {
        "type": "object",
        "properties": {
            "fail": {"type": "boolean", "description": "fail permanently"},
            "sleep_ms": {"type": "integer", "minimum": 0, "maximum": MAX_SLEEP_MS},
            "transient_failures": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": True,
    }
    chunk_size = 5000
    slice_size = 500
    max_attempts = 5
    retry_backoff = 0.05
    retry_backoff_max = 1.0
    # Room for the longest sleep a payload may ask for.
    time_limit = MAX_SLEEP_MS / 1000 + 60
    max_time_limit = MAX_SLEEP_MS / 1000 + 60

    def process(self, payload: dict[str, Any], file: IO[bytes] | None, context: JobContext) -> Any:
        """Sleep, fail or echo, as the payload says."""
        if payload.get("sleep_ms"):
            time.sleep(payload["sleep_ms"] / 1000)
        if context.attempt <= payload.get("transient_failures", 0):
            raise TransientError(f"transient failure {context.attempt} asked for by the payload")
        if payload.get("fail"):
            raise PermanentError("the payload asked echo to fail", code="echo_failed")
        return payload
