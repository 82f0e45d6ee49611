"""Named locks with an expiry, for work that must run once at a time across clusters."""

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from batches.models import Lock


def lock_acquire(*, name: str, owner: str, seconds: int) -> bool:
    """Take the named lock unless someone else holds it and it has not expired."""
    now = timezone.now()
    Lock.objects.get_or_create(name=name, defaults={"expires_at": now})
    return bool(
        Lock.objects.filter(name=name)
        .filter(Q(expires_at__lte=now) | Q(owner="") | Q(owner=owner))
        .update(owner=owner, expires_at=now + timedelta(seconds=seconds))
    )


def lock_release(*, name: str, owner: str) -> None:
    """Give the named lock back, if we still hold it."""
    Lock.objects.filter(name=name, owner=owner).update(owner="", expires_at=timezone.now())


def lock_held(name: str) -> bool:
    """Return True if someone holds the named lock now."""
    return Lock.objects.filter(name=name, expires_at__gte=timezone.now()).exclude(owner="").exists()
