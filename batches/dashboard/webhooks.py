"""Dashboard views for webhooks: redeliver a batch's delivery, rotate an account's secret."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from batches import webhooks
from batches.api.authentication import request_actor
from batches.dashboard.forms import ConfirmForm
from batches.dashboard.views import _batch, staff_required
from batches.models import Account, WebhookDelivery


@staff_required
@require_POST
def delivery_redeliver(request: HttpRequest, pk, delivery_id) -> HttpResponse:
    """Send one of the batch's webhook deliveries again, then go back to the batch."""
    batch = _batch(pk)
    delivery = get_object_or_404(WebhookDelivery, batch=batch, pk=delivery_id)
    webhooks.delivery_redeliver(delivery=delivery, actor=request_actor(request))
    messages.success(request, f"Delivery of {delivery.event} queued again for {delivery.url}.")
    return redirect(reverse("dashboard:batch-detail", kwargs={"pk": batch.pk}) + "#deliveries")


@staff_required
@require_http_methods(["GET", "POST"])
def webhook_secret_rotate(request: HttpRequest, number: int) -> HttpResponse:
    """Ask to confirm (GET); make a new webhook secret and show it this once (POST)."""
    account = get_object_or_404(Account, number=number)
    form = ConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        secret = webhooks.webhook_secret_rotate(account=account)
        account.refresh_from_db()
        # Rendered, not redirected: the secret must never sit in a session or a URL.
        response = render(
            request,
            "dashboard/webhook_secret_created.html",
            {"section": "accounts", "account": account, "secret": secret},
            status=201,
        )
        response["Cache-Control"] = "no-store"
        return response
    context = {
        "section": "accounts",
        "account": account,
        "form": form,
        "overlap_hours": settings.BATCHSITE_WEBHOOK_SECRET_OVERLAP_SECONDS / 3600,
    }
    return render(
        request,
        "dashboard/webhook_secret_rotate.html",
        context,
        status=400 if form.errors else 200,
    )
