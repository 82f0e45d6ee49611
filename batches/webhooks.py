"""Webhooks: tell a batch's callback_url what happened to it, signed, retried and logged.

Deliveries follow the Standard Webhooks spec: the headers `webhook-id` (the delivery's id,
the same on every try), `webhook-timestamp` (this try's time) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, keyed by the base64 secret after
`whsec_`; during a rotation's overlap a second one, made with the previous secret).

A delivery is stored with the exact body to send and a retry window, in the transaction
that made its event happen, and handed to django-q2 on commit; a task posts it through the
one outbound guard, and the sweep sends the retries that fell due. Each try is a
WebhookAttempt row, so operators and clients see what the receiver answered. The events a
batch asks for (`options.webhook_events`, its end by default):

- its end, `batch.<final state>`: stored by `batch_ended` where the batch is moved there;
- `item.failed`: stored by `items_failed` in the write transaction of a runner's slice
  that had failures, listing them, so a slice rolled back sends nothing and a committed
  one's failures are never lost;
- `batch.progress`: stored by `batch_progress`, which a worker calls after a slice wrote
  outcomes. Workers take turns through a conditional update of the batch's own
  WebhookProgress row, which lets one through per BATCHSITE_WEBHOOK_PROGRESS_SECONDS:
  neither the batch row nor a batch-wide lock is touched (a row another worker holds is
  skipped, not waited for), and each worker asks at most once per period, so a slice
  pays nothing more in between. Driven by slices rather than by the sweep, progress
  comes as often as asked (the sweep runs once a minute) and only when items ended.
  Batches that asked for neither event cost the runner nothing: it knows from the batch
  it loaded with its chunk.

A delivery is claimed by a conditional UPDATE that pushes `next_attempt_at` past the
longest a try can take (a lease), so two workers never post the same delivery at once; a
worker that dies mid-try leaves the lease to expire, and the sweep tries again. Receivers
must still expect a delivery more than once (a try whose answer was lost is tried again):
`webhook-id` and the body's `id` are the same every time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework.fields import DateTimeField

from batches.exceptions import NotFound
from batches.models import (
    BATCH_PROGRESS,
    ITEM_FAILED,
    Account,
    Batch,
    WebhookAttempt,
    WebhookDelivery,
    WebhookProgress,
)
from batches.timeline import event_record
from jobs import outbound

logger = logging.getLogger(__name__)

DELIVER_TASK = "batches.tasks.webhook_deliver"
USER_AGENT = "batchsite-webhooks"
SECRET_PREFIX = "whsec_"
# Random bytes in a new secret (the spec asks for 24 to 64).
SECRET_BYTES = 32
# Retries wait at most this long, however many tries failed before.
MAX_BACKOFF_SECONDS = 3600
# The start of the receiver's answer kept with each attempt, and the most read to get it.
EXCERPT_CHARS = 500
EXCERPT_READ_BYTES = 4 * EXCERPT_CHARS
# The sweep hands at most this many due retries to the workers per run.
RETRIES_PER_RUN = 100
LOST_ATTEMPT = "no answer was recorded: the worker stopped during this attempt"
NOT_FOLLOWED = "webhooks do not follow redirects; point callback_url at the final URL"

Status = WebhookDelivery.Status


# --- creating a delivery ------------------------------------------------------------------------


def _datetime(value: datetime | None) -> str | None:
    # The API's own rendering, so a receiver can compare these with what GET batches/ says.
    return DateTimeField().to_representation(value) if value else None


def batch_summary(batch: Batch) -> dict:
    """Return what a webhook body says about the batch: its identity, outcome and times."""
    return {
        "id": str(batch.pk),
        "number": batch.number,
        "account": batch.account.number,
        "type": batch.type,
        "label": batch.label,
        "metadata": batch.metadata,
        "status": batch.status,
        "counts": batch.counts(),
        "progress": batch.progress,
        "error_count": batch.error_count,
        "created_at": _datetime(batch.created_at),
        "committed_at": _datetime(batch.committed_at),
        "started_at": _datetime(batch.started_at),
        "finished_at": _datetime(batch.finished_at),
    }


def batch_ended(batch: Batch) -> WebhookDelivery | None:
    """Store the `batch.<status>` delivery of a batch that just ended, and send it on commit.

    Call it in the transaction that moved the batch (locked, saved) to its terminal state.
    Nothing happens without a callback_url, or if the batch asked for other events only.
    Every end is its own delivery, so a rerun that ends again notifies again.
    """
    event = f"batch.{batch.status}"
    if not batch.notifies(event):
        return None
    return _delivery_create(batch=batch, event=event, now=timezone.now())


def items_failed(*, batch_id: uuid.UUID, failures: list[dict[str, Any]]) -> WebhookDelivery | None:
    """Store an `item.failed` delivery listing `failures`, and send it on commit.

    Each failure is `{index, external_id, error_code, error_message}`. The runner calls it
    in the write transaction of a slice that had failures, for a batch that asked for the
    event: the delivery exists exactly when those outcomes do.
    """
    batch = Batch.objects.select_related("account").filter(pk=batch_id).first()
    if batch is None or not failures:
        return None
    return _delivery_create(
        batch=batch, event=ITEM_FAILED, now=timezone.now(), extra={"items": failures}
    )


def batch_progress(*, batch_id: uuid.UUID) -> WebhookDelivery | None:
    """Store a `batch.progress` delivery of a running batch, unless one was made lately.

    Lately: within BATCHSITE_WEBHOOK_PROGRESS_SECONDS. Workers call it after writing a
    slice's outcomes; the first to find the batch's WebhookProgress row due takes it with a
    conditional update, the others (skipping the row while it is held) store nothing.
    """
    now = timezone.now()
    every = timedelta(seconds=settings.BATCHSITE_WEBHOOK_PROGRESS_SECONDS)
    due = Q(sent_at__isnull=True) | Q(sent_at__lte=now - every)
    with transaction.atomic():
        marks = WebhookProgress.objects.filter(due, batch_id=batch_id)
        if marks.select_for_update(skip_locked=True).values_list("pk", flat=True).first() is None:
            return None
        batch = Batch.objects.select_related("account").filter(pk=batch_id).first()
        if batch is None or batch.status != Batch.Status.RUNNING:
            return None
        if not marks.update(sent_at=now):
            return None
        return _delivery_create(batch=batch, event=BATCH_PROGRESS, now=now)


def progress_subscribe(batch: Batch) -> None:
    """Make the row progress deliveries take turns on, if the batch asked for them."""
    if batch.notifies(BATCH_PROGRESS):
        WebhookProgress.objects.get_or_create(batch=batch)


def _delivery_create(
    *, batch: Batch, event: str, now: datetime, extra: dict[str, Any] | None = None
) -> WebhookDelivery:
    """Store a delivery of `event` about `batch` made at `now`; hand it out on commit.

    Every body has the delivery's `id`, its `type` (the event; `event` says the same, for
    receivers written before `type`), when it was made, and the batch's summary.
    """
    delivery_id = uuid.uuid4()
    body = {
        "id": str(delivery_id),
        "type": event,
        "event": event,
        "created_at": _datetime(now),
        "batch": batch_summary(batch),
        **(extra or {}),
    }
    delivery = WebhookDelivery.objects.create(
        id=delivery_id,
        batch=batch,
        event=event,
        url=batch.callback_url,
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        next_attempt_at=now,
        give_up_at=now + timedelta(seconds=settings.BATCHSITE_WEBHOOK_RETRY_SECONDS),
        created_at=now,
    )
    transaction.on_commit(lambda: delivery_enqueue(delivery_id))
    return delivery


def delivery_enqueue(delivery_id: uuid.UUID | str) -> None:
    """Hand a delivery to django-q2; call outside the transaction that made it due."""
    from django_q.tasks import async_task

    async_task(DELIVER_TASK, str(delivery_id), task_name=f"webhook-{delivery_id}")


# --- signing ------------------------------------------------------------------------------------


def secret_key(secret: str) -> bytes:
    """Return the HMAC key of a webhook secret: the base64 bytes after `whsec_`.

    A secret made before batchsite followed Standard Webhooks (`whsec_` and URL-safe
    text, not base64) keys with its own bytes, the whole string, as it always did; such a
    secret wants a rotation (see `secret_is_standard`).
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode()


def secret_is_standard(secret: str) -> bool:
    """Return True if `secret` is `whsec_` and base64, as Standard Webhooks libraries read it."""
    return secret_key(secret) != secret.encode()


def signature(secret: str, delivery_id: str, timestamp: int, body: str) -> str:
    """Return the `v1,<base64>` HMAC-SHA256 of `"<id>.<timestamp>.<body>"` under `secret`."""
    signed = f"{delivery_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(account: Account, delivery_id: str, body: str, now: datetime) -> str | None:
    """Return the webhook-signature value for `body`, or None if the account has no secret.

    For BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS after a rotation the previous secret
    signs too (a second signature after a space, the new one first), so receivers can
    switch secrets without missing a delivery.
    """
    if not account.webhook_secret:
        return None
    timestamp = int(now.timestamp())
    signatures = [signature(account.webhook_secret, delivery_id, timestamp, body)]
    overlap = timedelta(seconds=settings.BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS)
    rotated_at = account.webhook_secret_rotated_at
    if account.webhook_secret_previous and rotated_at and now < rotated_at + overlap:
        signatures.append(signature(account.webhook_secret_previous, delivery_id, timestamp, body))
    return " ".join(signatures)


def delivery_headers(delivery: WebhookDelivery, account: Account, now: datetime) -> dict:
    """Return the headers of a try at `delivery`, signed with the account's secrets now."""
    delivery_id = str(delivery.pk)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    signed = signature_header(account, delivery_id, delivery.body, now)
    if signed is not None:
        headers["webhook-signature"] = signed
    return headers


# --- delivering ---------------------------------------------------------------------------------


def lease_seconds() -> float:
    """Return how long a claimed try may take before another worker may try again.

    A try ends within BATCHSITE_WEBHOOK_TIMEOUT, whatever the receiver sends; the rest is
    room for the worker to record it.
    """
    return settings.BATCHSITE_WEBHOOK_TIMEOUT + 30


def backoff_seconds(attempts: int) -> float:
    """Return the wait after `attempts` failed tries: doubling from the base, capped, jittered.

    Half the delay is fixed and half random, so receivers that failed together are not all
    retried at the same moment.
    """
    base = settings.BATCHSITE_WEBHOOK_BACKOFF_SECONDS
    delay = min(MAX_BACKOFF_SECONDS, base * 2 ** min(max(attempts - 1, 0), 20))
    return delay / 2 + random.uniform(0, delay / 2)


def _claim(delivery_id, now: datetime) -> tuple[WebhookDelivery, WebhookAttempt] | None:
    """Take a due delivery under a lease and open its attempt row; None if not ours to send."""
    with transaction.atomic():
        claimed = WebhookDelivery.objects.filter(
            pk=delivery_id, status=Status.PENDING, next_attempt_at__lte=now
        ).update(
            next_attempt_at=now + timedelta(seconds=lease_seconds()),
            attempts=F("attempts") + 1,
        )
        if not claimed:
            return None
        delivery = WebhookDelivery.objects.select_related("batch__account").get(pk=delivery_id)
        # A try that never recorded an answer belonged to a worker that died.
        _unfinished(delivery).update(error=LOST_ATTEMPT)
        attempt = WebhookAttempt.objects.create(
            delivery=delivery, number=delivery.attempts, started_at=now
        )
    return delivery, attempt


def _unfinished(delivery: WebhookDelivery):
    return WebhookAttempt.objects.filter(delivery=delivery, status_code__isnull=True, error="")


def _post(delivery: WebhookDelivery, headers: dict) -> tuple[int | None, str, str, bool]:
    """Post the body once; return (status code, error, start of the answer, final).

    `final` says the failure would repeat on every try, so the delivery fails at once.
    """
    timeout = settings.BATCHSITE_WEBHOOK_TIMEOUT
    status_code: int | None = None
    received = bytearray()
    try:
        with (
            outbound.deadline(timeout),
            outbound.Client(timeout=timeout) as client,
            outbound.fetch(
                client,
                "POST",
                delivery.url,
                content=delivery.body.encode(),
                headers=headers,
                follow_redirects=False,
            ) as response,
        ):
            status_code = response.status_code
            for block in response.iter_bytes():
                received += block
                if len(received) >= EXCERPT_READ_BYTES:
                    break
    except outbound.OutboundRefused as exc:
        return None, f"refused: {exc}", "", True
    except httpx.TimeoutException:
        if status_code is None:
            return None, f"timed out after {timeout:g}s", "", False
        # The answer came but its body dragged on: the excerpt is what arrived in time.
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, "", False
    excerpt = bytes(received).decode("utf-8", errors="replace")[:EXCERPT_CHARS]
    if 200 <= status_code < 300:
        return status_code, "", excerpt, False
    reason = httpx.codes.get_reason_phrase(status_code)
    error = f"the receiver answered {status_code} {reason}".rstrip()
    if 300 <= status_code < 400:
        # Trying again would meet the same redirect.
        return status_code, f"{error}: {NOT_FOLLOWED}", excerpt, True
    return status_code, error, excerpt, False


def deliver(delivery_id) -> str:
    """Make one try at a due delivery; return what happened.

    A 2xx answer to the POST delivers it. Anything else (another status, a timeout, a
    connection error) is retried after a backoff while the retry window lasts, then the
    delivery fails. A URL the outbound guard refuses (the allow-list changed, a redirect to
    a host it does not allow) and a redirect that turned the POST into a GET fail at once:
    retrying would not change the answer. A delivery that is not due (another
    worker holds it, it was delivered, it waits for its next try) is left alone.
    """
    now = timezone.now()
    claimed = _claim(delivery_id, now)
    if claimed is None:
        return "not_due"
    delivery, attempt = claimed
    headers = delivery_headers(delivery, delivery.batch.account, now)
    started = time.monotonic()
    status_code, error, excerpt, final = _post(delivery, headers)
    duration_ms = round((time.monotonic() - started) * 1000)
    with transaction.atomic():
        WebhookAttempt.objects.filter(pk=attempt.pk).update(
            duration_ms=duration_ms,
            status_code=status_code,
            error=error,
            response_excerpt=excerpt,
        )
        return _outcome_record(
            delivery_id, attempt.number, status_code=status_code, error=error, final=final
        )


def _outcome_record(
    delivery_id, number: int, *, status_code: int | None, error: str, final: bool
) -> str:
    """Write the outcome of try `number` onto the delivery, unless another try took over."""

    # Only the delivery's row is locked; the batch is read, for its timeline, if it ends.
    delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
    # Gone with its batch, or the lease ran out and another worker's try now owns it.
    if delivery is None or delivery.status != Status.PENDING or delivery.attempts != number:
        return "superseded"
    now = timezone.now()
    extra = {"batch": str(delivery.batch_id)}
    delivery.last_status_code = status_code
    delivery.last_error = error
    fields = ["status", "next_attempt_at", "last_status_code", "last_error", "delivered_at"]
    if not error:
        delivery.status = Status.SUCCEEDED
        delivery.next_attempt_at = None
        delivery.delivered_at = now
        delivery.save(update_fields=fields)
        event_record(
            batch=delivery.batch,
            kind="webhook_delivered",
            actor="webhooks",
            detail={"delivery": str(delivery.pk), "event": delivery.event, "attempts": number},
        )
        logger.info(
            "webhook %s %s delivered to %s (attempt %d, %s)",
            delivery.pk, delivery.event, delivery.url, number, status_code, extra=extra,
        )  # fmt: skip
        return "delivered"
    wait = backoff_seconds(number)
    if not final and now + timedelta(seconds=wait) < delivery.give_up_at:
        delivery.next_attempt_at = now + timedelta(seconds=wait)
        delivery.save(update_fields=fields)
        logger.warning(
            "webhook %s %s to %s failed (attempt %d: %s); next try in %ds",
            delivery.pk, delivery.event, delivery.url, number, error, wait, extra=extra,
        )  # fmt: skip
        return "retrying"
    if not final:
        delivery.last_error = f"gave up after {number} attempt(s) in the retry window: {error}"
    delivery.status = Status.FAILED
    delivery.next_attempt_at = None
    delivery.save(update_fields=fields)
    event_record(
        batch=delivery.batch,
        kind="webhook_failed",
        actor="webhooks",
        detail={
            "delivery": str(delivery.pk),
            "event": delivery.event,
            "error": delivery.last_error,
        },
    )
    logger.warning(
        "webhook %s %s to %s failed for good: %s",
        delivery.pk, delivery.event, delivery.url, delivery.last_error, extra=extra,
    )  # fmt: skip
    return "failed"


def deliveries_retry_due(now: datetime) -> int:
    """Hand the deliveries whose next try is due to the workers; return how many.

    The sweep calls this, so retries happen at its rhythm (BATCHSITE_SWEEP_MINUTES) even
    when the backoff is shorter. A delivery handed twice is tried once: the claim decides.
    """
    due = list(
        WebhookDelivery.objects.filter(status=Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:RETRIES_PER_RUN]
    )
    for delivery_id in due:
        delivery_enqueue(delivery_id)
    return len(due)


# --- operator and client actions ----------------------------------------------------------------


@transaction.atomic
def delivery_redeliver(*, delivery: WebhookDelivery, actor: str) -> WebhookDelivery:
    """Send a delivery again, whatever its status: same id and body, a new retry window.

    Locks the delivery row (the batch's state does not change). A try in flight right now
    is not doubled: the next try waits for its lease, and if that try succeeds, it was the
    redelivery.
    """

    locked = WebhookDelivery.objects.select_for_update().filter(pk=delivery.pk).first()
    if locked is None:
        raise NotFound("delivery not found")
    now = timezone.now()
    in_flight = (
        _unfinished(locked)
        .filter(started_at__gt=now - timedelta(seconds=lease_seconds()))
        .order_by("-number")
        .first()
    )
    locked.status = Status.PENDING
    locked.next_attempt_at = now
    if locked.attempts and in_flight is not None and in_flight.number == locked.attempts:
        locked.next_attempt_at = in_flight.started_at + timedelta(seconds=lease_seconds())
    locked.give_up_at = now + timedelta(seconds=settings.BATCHSITE_WEBHOOK_RETRY_SECONDS)
    locked.delivered_at = None
    locked.save(update_fields=["status", "next_attempt_at", "give_up_at", "delivered_at"])
    event_record(
        batch=locked.batch,
        kind="webhook_redelivered",
        actor=actor,
        detail={"delivery": str(locked.pk), "event": locked.event},
    )
    delivery_id = locked.pk
    transaction.on_commit(lambda: delivery_enqueue(delivery_id))
    return locked


@transaction.atomic
def webhook_secret_rotate(*, account: Account) -> str:
    """Give the account a new webhook secret and return it; it is shown this once.

    A secret is `whsec_` and the base64 of SECRET_BYTES random bytes, as Standard
    Webhooks has it. The secret it replaces keeps signing (a second signature) for
    BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS; a secret older than that is dropped, so
    rotating twice in a row ends the oldest one's overlap at once.
    """
    locked = Account.objects.select_for_update().get(pk=account.pk)
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()
    locked.webhook_secret_previous = locked.webhook_secret
    locked.webhook_secret = secret
    locked.webhook_secret_rotated_at = timezone.now()
    locked.save(
        update_fields=["webhook_secret", "webhook_secret_previous", "webhook_secret_rotated_at"]
    )
    logger.info("webhook secret of account %s rotated", locked.number)
    return secret
