"""The webhook API: a batch's deliveries and redelivery, the account and its secret."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batches import services, webhooks
from batches.models import Account, WebhookAttempt, WebhookDelivery
from tests.factories import BatchFactory, WebhookDeliveryFactory
from tests.helpers import kinds
from tests.helpers.api import assert_problem, error_fields
from tests.webhooks.helpers import HOOK, finished_batch, only_delivery, posts, run_on_commit

pytestmark = pytest.mark.django_db

BATCHES = "/api/v1/batches/"
ACCOUNT = "/api/v1/account/"
SECRET = "/api/v1/account/webhook-secret/"
D = WebhookDelivery.Status


def deliveries_url(batch) -> str:
    return f"{BATCHES}{batch.pk}/deliveries/"


def redeliver_url(delivery) -> str:
    return f"{BATCHES}{delivery.batch_id}/deliveries/{delivery.pk}/redeliver/"


# --- creating a batch with a callback_url --------------------------------------------------------


def test_batch_create__callback_url_outside_the_allow_list_is_refused(client_a, settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["hooks.example.com"]

    response = client_a.post(
        BATCHES, {"options": {"callback_url": "http://127.0.0.1:9/hook"}}, format="json"
    )

    assert_problem(response, 400, "invalid")
    assert error_fields(response.json()) == {"callback_url"}
    assert "127.0.0.1" in response.json()["errors"][0]["message"]


def test_batch_create__callback_url_in_the_allow_list_is_kept(client_a, receiver):
    url = receiver.url_for(HOOK)

    response = client_a.post(BATCHES, {"options": {"callback_url": url}}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["options"]["callback_url"] == url
    assert body["links"]["deliveries"] == f"http://testserver{BATCHES}{body['id']}/deliveries/"


# --- listing deliveries --------------------------------------------------------------------------


def test_deliveries__list_newest_first_with_their_attempts(client_a, account, receiver, hook_ok):
    batch = finished_batch(account, hook_ok)
    with run_on_commit():
        services.batch_rerun(batch=batch, which="all", actor="test")
    newer, older = WebhookDelivery.objects.filter(batch=batch).order_by("-created_at")

    response = client_a.get(deliveries_url(batch))

    assert response.status_code == 200
    page = response.json()
    assert [row["id"] for row in page["results"]] == [str(newer.pk), str(older.pk)]
    row = page["results"][0]
    assert row["event"] == "batch.finished"
    assert row["status"] == "succeeded"
    assert row["url"] == hook_ok
    assert row["body"] == newer.body
    assert row["last_status_code"] == 200
    assert row["delivered_at"]
    assert row["next_attempt_at"] is None
    (attempt,) = row["attempts"]
    assert set(attempt) == {
        "number", "started_at", "duration_ms", "status_code", "error", "response_excerpt",
    }  # fmt: skip
    assert (attempt["number"], attempt["status_code"], attempt["error"]) == (1, 200, "")


def test_deliveries__list_runs_a_bounded_number_of_queries(
    client_a, account, django_assert_max_num_queries
):
    batch = BatchFactory(account=account, status="finished", callback_url="http://x.test/")
    for n in range(30):
        delivery = WebhookDeliveryFactory(
            batch=batch,
            status=D.FAILED,
            attempts=3,
            give_up_at=timezone.now(),
            created_at=timezone.now() - timedelta(minutes=n),
        )
        for number in (1, 2, 3):
            WebhookAttempt.objects.create(delivery=delivery, number=number, status_code=500)

    with django_assert_max_num_queries(8):
        response = client_a.get(deliveries_url(batch))

    assert len(response.json()["results"]) == 30
    assert all(len(row["attempts"]) == 3 for row in response.json()["results"])


def test_deliveries__another_accounts_batch_is_404(client_a, client_b, account, receiver, hook_ok):
    batch = finished_batch(account, hook_ok)
    delivery = only_delivery(batch)

    listed = client_b.get(deliveries_url(batch))
    redelivered = client_b.post(redeliver_url(delivery))

    assert_problem(listed, 404, "not_found")
    assert_problem(redelivered, 404, "not_found")
    assert len(posts(receiver)) == 1
    assert "webhook_redelivered" not in kinds(batch)
    assert client_a.get(deliveries_url(batch)).status_code == 200


def test_deliveries__staff_see_every_accounts_deliveries(staff_client, account, receiver, hook_ok):
    batch = finished_batch(account, hook_ok)

    response = staff_client.get(deliveries_url(batch), HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(only_delivery(batch).pk)]


def test_deliveries__unknown_batch_and_unknown_delivery_are_404(
    client_a, account, receiver, hook_ok
):
    batch = finished_batch(account, hook_ok)
    other = finished_batch(account, hook_ok)

    assert_problem(client_a.get(f"{BATCHES}{BatchFactory().pk}/deliveries/"), 404, "not_found")
    assert_problem(
        client_a.post(f"{BATCHES}{batch.pk}/deliveries/{only_delivery(other).pk}/redeliver/"),
        404,
        "not_found",
    )


# --- redelivery ----------------------------------------------------------------------------------


def test_redeliver__posts_the_same_delivery_again(client_a, account, receiver, hook_ok):
    webhooks.webhook_secret_rotate(account=account)
    batch = finished_batch(account, hook_ok)
    delivery = only_delivery(batch)

    with run_on_commit():
        response = client_a.post(redeliver_url(delivery))

    assert response.status_code == 202
    assert response.json()["id"] == str(delivery.pk)
    first, second = posts(receiver)
    assert first.get_data() == second.get_data()
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (D.SUCCEEDED, 2)
    (event,) = batch.events.filter(kind="webhook_redelivered")
    assert event.actor.startswith("key:")
    assert event.detail == {"delivery": str(delivery.pk), "event": "batch.finished"}


def test_redeliver__a_failed_delivery_gets_a_new_window(client_a, account, receiver, settings):
    settings.BATCHSITE_WEBHOOK_RETRY_SECONDS = 2
    receiver.expect_oneshot_request(HOOK, method="POST").respond_with_data("", status=500)
    receiver.expect_request(HOOK, method="POST").respond_with_data("ok")
    batch = finished_batch(account, receiver.url_for(HOOK))
    failed = only_delivery(batch)
    assert failed.status == D.FAILED
    settings.BATCHSITE_WEBHOOK_RETRY_SECONDS = 3600

    with run_on_commit():
        response = client_a.post(redeliver_url(failed))

    assert response.status_code == 202
    delivery = only_delivery(batch)
    assert delivery.give_up_at > failed.give_up_at + timedelta(minutes=30)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (D.SUCCEEDED, 2, 200)


# --- the account and its webhook secret ----------------------------------------------------------


def test_account__shows_whether_a_secret_is_set_but_never_the_secret(client_a, account):
    before = client_a.get(ACCOUNT)
    secret = webhooks.webhook_secret_rotate(account=account)
    after = client_a.get(ACCOUNT)

    assert before.json() == {
        "number": account.number,
        "name": "acme",
        "webhook_secret_set": False,
        "webhook_secret_rotated_at": None,
        "webhook_secret_standard": False,
    }
    assert after.json()["webhook_secret_set"] is True
    assert after.json()["webhook_secret_standard"] is True
    assert after.json()["webhook_secret_rotated_at"]
    assert secret not in after.content.decode()


def test_webhook_secret__rotation_returns_the_new_secret_once(client_a, account):
    first = client_a.post(SECRET)
    second = client_a.post(SECRET)

    assert first.status_code == second.status_code == 201
    assert first["Cache-Control"] == "no-store"
    assert set(first.json()) == {"secret", "rotated_at"}
    old, new = first.json()["secret"], second.json()["secret"]
    assert old.startswith("whsec_")
    assert new.startswith("whsec_")
    assert old != new
    account.refresh_from_db()
    assert (account.webhook_secret, account.webhook_secret_previous) == (new, old)
    shown = client_a.get(ACCOUNT).content.decode()
    assert old not in shown
    assert new not in shown


def test_webhook_secret__only_the_keys_own_account_is_rotated(client_b, account, other_account):
    client_b.post(SECRET)

    account.refresh_from_db()
    other_account.refresh_from_db()
    assert other_account.webhook_secret
    assert not account.webhook_secret


def test_account__staff_session_without_an_account_is_refused(staff_client):
    for response in (
        staff_client.get(ACCOUNT, HTTP_ACCEPT="application/json"),
        staff_client.post(SECRET, HTTP_ACCEPT="application/json"),
    ):
        assert_problem(response, 403, "account_required")
    assert not Account.objects.exclude(webhook_secret="").exists()


def test_account__needs_a_key(client):
    assert_problem(client.get(ACCOUNT), 401, "not_authenticated")
    assert_problem(client.post(SECRET), 401, "not_authenticated")


# --- the schema ----------------------------------------------------------------------------------


def test_schema__describes_what_the_webhook_endpoints_answer(client_a, account, receiver, hook_ok):
    schema = client_a.get("/api/v1/schema/?format=json").json()
    components = schema["components"]["schemas"]
    batch = finished_batch(account, hook_ok)

    listed = client_a.get(deliveries_url(batch)).json()
    account_body = client_a.get(ACCOUNT).json()
    secret_body = client_a.post(SECRET).json()

    paths = schema["paths"]
    assert "200" in paths["/api/v1/batches/{id}/deliveries/"]["get"]["responses"]
    assert (
        "202"
        in paths["/api/v1/batches/{id}/deliveries/{delivery_id}/redeliver/"]["post"]["responses"]
    )
    assert "201" in paths["/api/v1/account/webhook-secret/"]["post"]["responses"]
    assert "403" in paths["/api/v1/account/"]["get"]["responses"]
    delivery = listed["results"][0]
    assert set(delivery) == set(components["WebhookDelivery"]["properties"])
    assert set(delivery["attempts"][0]) == set(components["WebhookAttempt"]["properties"])
    assert set(account_body) == set(components["Account"]["properties"])
    assert set(secret_body) == set(components["WebhookSecret"]["properties"])
    assert set(listed) == set(components["PaginatedWebhookDeliveryList"]["properties"])
