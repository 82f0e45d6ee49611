"""Tenants and their API keys, and the two small tables the engine shares: counters, locks."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey


class Sequence(models.Model):
    """A named integer counter, for the integer numbers some APIs name things by."""

    name = models.CharField(primary_key=True, max_length=40)
    last = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.last}"


class Lock(models.Model):
    """A named lock held until `expires_at`, for work that must run once at a time."""

    name = models.CharField(primary_key=True, max_length=100)
    owner = models.CharField(max_length=100, blank=True)
    expires_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} held by {self.owner or 'nobody'}"


class Account(models.Model):
    """A tenant: its API keys see only its own batches."""

    name = models.CharField(max_length=100, unique=True)
    number = models.BigIntegerField(unique=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Signs webhook deliveries (HMAC-SHA256). Shown once when set; kept because signing
    # needs it. The previous secret also signs for a while after a rotation.
    webhook_secret = models.CharField(max_length=100, blank=True, editable=False)
    webhook_secret_previous = models.CharField(max_length=100, blank=True, editable=False)
    webhook_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return self.name


class ApiKey(AbstractAPIKey):
    """A hashed API key belonging to one account; only its prefix is ever shown again."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
