"""System checks for the job type registry, so a bad BATCHSITE_JOB_TYPES fails at start-up."""

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from jobs import payloads
from jobs.registry import job_types


@checks.register()
def check_job_types(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report a job type that cannot be loaded, whose name is taken, or whose schema is bad."""
    job_types.cache_clear()
    try:
        types = job_types()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint="Fix BATCHSITE_JOB_TYPES.", id="jobs.E001")]
    problems = (payloads.schema_problem(type(job_type)) for job_type in types.values())
    return [
        checks.Error(problem, hint="Write it as JSON Schema draft 7.", id="jobs.E002")
        for problem in problems
        if problem
    ]
