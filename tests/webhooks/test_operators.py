"""Webhooks for operators: the dashboard deliveries, secret rotation, the admin, the command."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from batches import webhooks
from batches.models import WebhookDelivery
from tests.factories import open_batch
from tests.helpers import kinds
from tests.webhooks.helpers import HOOK, finished_batch, only_delivery, posts, run_on_commit

pytestmark = pytest.mark.django_db

D = WebhookDelivery.Status


def csrf_token(response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode())[1]


def redeliver_path(delivery) -> str:
    return reverse("dashboard:delivery-redeliver", args=[delivery.batch_id, delivery.pk])


# --- the batch page ------------------------------------------------------------------------------


def test_batch_detail__lists_deliveries_with_a_redeliver_button(staff, account, receiver):
    receiver.expect_request(HOOK, method="POST").respond_with_data("nope", status=502)
    batch = finished_batch(account, receiver.url_for(HOOK))
    delivery = only_delivery(batch)

    page = staff.get(reverse("dashboard:batch-detail", args=[batch.pk])).content.decode()

    assert "Webhook deliveries" in page
    row = page[page.index(f'data-testid="delivery-{delivery.pk}"') :].split("</tr>")[0]
    assert "batch.finished" in row
    assert "pending" in row
    assert "502" in row
    assert f'action="{redeliver_path(delivery)}"' in row
    assert 'method="post"' in row
    assert "csrfmiddlewaretoken" in row


def test_batch_detail__no_section_without_a_callback_url(staff, account):
    batch = open_batch(account=account)

    page = staff.get(reverse("dashboard:batch-detail", args=[batch.pk])).content.decode()

    assert "Webhook deliveries" not in page


def test_delivery_redeliver__the_button_sends_it_again(csrf_staff, account, receiver, hook_ok):
    batch = finished_batch(account, hook_ok)
    delivery = only_delivery(batch)
    page = csrf_staff.get(reverse("dashboard:batch-detail", args=[batch.pk]))

    with run_on_commit():
        response = csrf_staff.post(
            redeliver_path(delivery), {"csrfmiddlewaretoken": csrf_token(page)}
        )

    assert response.status_code == 302
    assert response["Location"].endswith(f"/batches/{batch.pk}/#deliveries")
    first, second = posts(receiver)
    assert first.get_data() == second.get_data()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (D.SUCCEEDED, 2)
    (event,) = batch.events.filter(kind="webhook_redelivered")
    assert event.actor == "user:operator"


def test_delivery_redeliver__needs_a_post_with_a_csrf_token(csrf_staff, account, receiver, hook_ok):
    batch = finished_batch(account, hook_ok)
    delivery = only_delivery(batch)

    assert csrf_staff.get(redeliver_path(delivery)).status_code == 405
    assert csrf_staff.post(redeliver_path(delivery)).status_code == 403
    assert "webhook_redelivered" not in kinds(batch)
    assert len(posts(receiver)) == 1


def test_delivery_redeliver__is_for_staff_only(account, receiver, hook_ok):
    batch = finished_batch(account, hook_ok)
    user = get_user_model().objects.create_user("someone", password="pw")
    client = Client()
    client.force_login(user)

    assert client.post(redeliver_path(only_delivery(batch))).status_code == 403
    assert "webhook_redelivered" not in kinds(batch)


# --- the accounts page ---------------------------------------------------------------------------


def test_webhook_secret_rotate__shows_the_new_secret_once(csrf_staff, account):
    accounts = csrf_staff.get(reverse("dashboard:accounts")).content.decode()
    rotate = reverse("dashboard:webhook-secret-rotate", args=[account.number])
    assert f'href="{rotate}"' in accounts
    assert "deliveries are sent unsigned" in accounts
    confirm = csrf_staff.get(rotate)
    assert confirm.status_code == 200

    response = csrf_staff.post(rotate, {"confirm": "1", "csrfmiddlewaretoken": csrf_token(confirm)})

    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    account.refresh_from_db()
    shown = re.search(r'data-testid="webhook-secret">([^<]+)<', response.content.decode())[1]
    assert shown == account.webhook_secret
    assert shown.startswith("whsec_")
    later = csrf_staff.get(reverse("dashboard:accounts")).content.decode()
    assert shown not in later
    assert "Rotate webhook secret" in later


def test_webhook_secret_rotate__get_changes_nothing_and_post_needs_confirmation(staff, account):
    rotate = reverse("dashboard:webhook-secret-rotate", args=[account.number])

    assert staff.get(rotate).status_code == 200
    asked_again = staff.post(rotate, {})
    assert asked_again.status_code == 200
    assert 'data-testid="confirm-page"' in asked_again.content.decode()

    account.refresh_from_db()
    assert account.webhook_secret == ""


def test_webhook_secret_rotate__keeps_the_previous_secret_for_the_overlap(staff, account):
    old = webhooks.webhook_secret_rotate(account=account)
    rotate = reverse("dashboard:webhook-secret-rotate", args=[account.number])

    staff.post(rotate, {"confirm": "1"})

    account.refresh_from_db()
    assert account.webhook_secret_previous == old
    assert account.webhook_secret not in ("", old)


# --- the admin -----------------------------------------------------------------------------------


def test_admin__deliveries_are_read_only_with_their_attempts(admin_client, account, receiver):
    receiver.expect_request(HOOK, method="POST").respond_with_data("busy", status=503)
    batch = finished_batch(account, receiver.url_for(HOOK))
    delivery = only_delivery(batch)
    changelist = reverse("admin:batches_webhookdelivery_changelist")
    change = reverse("admin:batches_webhookdelivery_change", args=[delivery.pk])

    listed = admin_client.get(changelist, {"batch": batch.number})
    shown = admin_client.get(change)

    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == [delivery]
    assert shown.status_code == 200
    assert "busy" in shown.content.decode()  # the attempt's answer, inline
    assert admin_client.get(reverse("admin:batches_webhookdelivery_add")).status_code == 403
    assert admin_client.post(change, {"url": "http://elsewhere.test/"}).status_code == 403
    delivery.refresh_from_db()
    assert delivery.url == receiver.url_for(HOOK)


def test_admin__redeliver_action_goes_through_the_service(admin_client, account, receiver, hook_ok):
    batch = finished_batch(account, hook_ok)
    delivery = only_delivery(batch)

    with run_on_commit():
        response = admin_client.post(
            reverse("admin:batches_webhookdelivery_changelist"),
            {"action": "redeliver", "_selected_action": [str(delivery.pk)]},
            follow=True,
        )

    assert response.status_code == 200
    assert len(posts(receiver)) == 2
    (event,) = batch.events.filter(kind="webhook_redelivered")
    assert event.actor == "admin:admin"


# --- the management command ----------------------------------------------------------------------


def test_rotatewebhooksecret__prints_the_secret_as_its_last_line(account):
    out, err = io.StringIO(), io.StringIO()

    call_command("rotatewebhooksecret", "acme", stdout=out, stderr=err)
    call_command("rotatewebhooksecret", str(account.number), stdout=out, stderr=err)

    first, second = out.getvalue().splitlines()
    account.refresh_from_db()
    assert (account.webhook_secret, account.webhook_secret_previous) == (second, first)
    assert "also signs" in err.getvalue()


def test_rotatewebhooksecret__unknown_account_is_an_error(db):
    with pytest.raises(CommandError, match="no account named or numbered 'nobody'"):
        call_command("rotatewebhooksecret", "nobody")
