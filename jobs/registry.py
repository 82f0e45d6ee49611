"""The registry of job types: the built-ins plus those named in BATCHSITE_JOB_TYPES."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from jobs.base import JobType

BUILTIN_TYPES: list[str] = [
    "jobs.echo.Echo",
    "jobs.http_request.HttpRequest",
    "jobs.email_send.EmailSend",
    "jobs.image_derive.ImageDerive",
    "jobs.signing.DocumentSign",
    "jobs.signing.DocumentVerify",
]
_extra: dict[str, type[JobType]] = {}


def register(cls: type[JobType]) -> type[JobType]:
    """Register a JobType subclass in code; usable as a class decorator."""
    _extra[cls.name] = cls
    job_types.cache_clear()
    return cls


@cache
def job_types() -> dict[str, JobType]:
    """Return every registered job type by name; raise ImproperlyConfigured on a bad entry."""
    found: dict[str, JobType] = {}
    paths = [*BUILTIN_TYPES, *settings.BATCHSITE_JOB_TYPES]
    classes = []
    for path in paths:
        try:
            cls = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"job type {path!r} cannot be imported: {exc}") from exc
        classes.append((path, cls))
    classes.extend((f"{cls.__module__}.{cls.__qualname__}", cls) for cls in _extra.values())
    for path, cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, JobType)):
            raise ImproperlyConfigured(f"job type {path!r} is not a subclass of jobs.JobType")
        if not cls.name:
            raise ImproperlyConfigured(f"job type {path!r} has no name")
        if cls.name in found and type(found[cls.name]) is not cls:
            raise ImproperlyConfigured(
                f"job type name {cls.name!r} is registered twice "
                f"({type(found[cls.name]).__module__} and {path})"
            )
        found[cls.name] = cls()
    return found


def get_job_type(name: str) -> JobType | None:
    """Return the job type called `name`, or None."""
    return job_types().get(name)


@receiver(setting_changed)
def _reset_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "BATCHSITE_JOB_TYPES":
        job_types.cache_clear()
