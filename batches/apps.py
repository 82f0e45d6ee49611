"""App config for the batch domain."""

from django.apps import AppConfig


class BatchesConfig(AppConfig):
    """The batches app."""

    name = "batches"
    verbose_name = "Batches"

    def ready(self):
        """Load the OpenAPI extensions, keep the sweep scheduled after every migrate, and
        make clusters stop their workers cleanly."""
        from django.db.models.signals import post_migrate

        from batches.api import schema  # noqa: F401
        from batches.engine import shutdown

        post_migrate.connect(_sweep_schedule_ensure, sender=self)
        shutdown.install()


def _sweep_schedule_ensure(**kwargs):
    """Create or update the django-q2 schedule that runs the sweep."""
    from django.conf import settings
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="batchsite sweep",
        defaults={
            "func": "batches.tasks.sweep",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.BATCHSITE_SWEEP_MINUTES,
            "repeats": -1,
        },
    )
