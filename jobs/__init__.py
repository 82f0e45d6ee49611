"""Job types: what a worker does with one item's payload (and file).

This package knows nothing of batches; `batches` depends on it, never the reverse.
"""

from jobs.base import JobContext, JobType, PermanentError, TransientError
from jobs.registry import get_job_type, job_types, register

__all__ = [
    "JobContext",
    "JobType",
    "PermanentError",
    "TransientError",
    "get_job_type",
    "job_types",
    "register",
]
