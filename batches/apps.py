"""App config for the batch domain."""

from django.apps import AppConfig


class BatchesConfig(AppConfig):
    """The batches app."""

    name = "batches"
    verbose_name = "Batches"

    def ready(self):
        """Load the OpenAPI extensions."""
        from batches.api import schema  # noqa: F401
