"""App config for job types."""

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """Load the job type registry when Django starts."""

    name = "jobs"
    verbose_name = "Job types"

    def ready(self) -> None:
        """Register the system check that validates BATCHSITE_JOB_TYPES."""
        from jobs import checks  # noqa: F401
