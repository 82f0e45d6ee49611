"""A webhook end to end: a batch with a callback_url finishes on a real qcluster subprocess."""

from __future__ import annotations

import pytest

from batches import webhooks
from batches.models import Batch, WebhookDelivery
from tests.conftest import wait_for
from tests.e2e.helpers import wait_terminal
from tests.helpers.api import create_batch
from tests.webhooks.helpers import HOOK, body_of, posts, signed_by

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_cluster_webhook__finished_batch_is_delivered_once_signed(
    client_a, account, cluster_factory, receiver
):
    receiver.expect_request(HOOK, method="POST").respond_with_data("ok")
    secret = webhooks.webhook_secret_rotate(account=account)
    cluster = cluster_factory(env={"BATCHSITE_OUTBOUND_ALLOWED_HOSTS": "localhost"})
    items = [{"payload": {"n": n}} for n in range(50)]

    created = create_batch(
        client_a, items=items, commit=True, options={"callback_url": receiver.url_for(HOOK)}
    )
    batch = wait_terminal(created["id"], cluster)

    def delivered():
        return WebhookDelivery.objects.filter(batch=batch, status="succeeded").first()

    try:
        delivery = wait_for(delivered, timeout=60)
    except AssertionError:
        print(cluster.output()[-5000:])
        raise
    assert batch.status == Batch.Status.FINISHED
    assert WebhookDelivery.objects.filter(batch=batch).count() == 1
    (request,) = posts(receiver)
    assert request.headers["Batchsite-Event"] == "batch.finished"
    assert request.headers["Batchsite-Delivery"] == str(delivery.pk)
    assert signed_by(secret, request)
    body = body_of(request)
    assert body["batch"]["id"] == str(batch.pk)
    assert body["batch"]["counts"]["succeeded"] == 50
    assert delivery.attempts == 1
