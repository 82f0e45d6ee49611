"""Progressive results read while a real qcluster is still writing them: no skip, no repeat."""

from __future__ import annotations

import time

import pytest

from batches.models import Batch, Item
from tests.helpers.api import batch_url, create_batch

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

LIMIT = 100
TERMINAL = {status.value for status in Batch.TERMINAL}


def follow_results(client, batch_id, cluster, *, timeout: float = 180) -> tuple[list, list]:
    """Follow `next` from the first results page until there is none; return every page.

    Returns (pages, statuses): the items of each page and the batch status each page saw.
    """
    url = batch_url(batch_id, f"results/?limit={LIMIT}")
    pages: list[list[dict]] = []
    statuses: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        page = [item for group in body["results"].values() for item in group]
        assert len(page) <= LIMIT
        pages.append(page)
        statuses.append(body["status"])
        if body["next"] is None:
            assert body["status"] in TERMINAL, body
            assert len(page) < LIMIT, "a full page always has a next page"
            return pages, statuses
        if body["status"] not in TERMINAL:
            assert body["next"], "an unfinished batch always has a next page"
        url = body["next"]
        if time.monotonic() > deadline:
            print(cluster.output()[-5000:])
            raise AssertionError(f"results still had a next page after {timeout}s")
        if not page:
            time.sleep(0.05)  # nothing new yet: let the workers write some more


@pytest.mark.parametrize(
    ("job_type", "size", "failing"),
    [("echo", 3000, {13, 1500, 2999}), ("test.flaky", 1500, {0, 99, 100, 777, 1499})],
    ids=["echo-one-chunk", "flaky-many-chunks"],
)
def test_results__followed_during_a_run_list_every_ended_item_exactly_once(
    client_a, cluster_factory, job_type, size, failing
):
    # Short slices make the workers write often while the pages are read.
    cluster = cluster_factory(env={"BATCHSITE_SLICE_SECONDS": "0.05"})
    if job_type == "echo":
        payload = {n: {"n": n, "sleep_ms": 1, **({"fail": True} if n in failing else {})}
                   for n in range(size)}  # fmt: skip
    else:
        payload = {n: {"n": n, **({"crash": True} if n in failing else {})} for n in range(size)}
    batch = create_batch(
        client_a,
        type=job_type,
        items=[{"external_id": f"e{n}", "payload": payload[n]} for n in range(size)],
        commit=True,
    )

    pages, statuses = follow_results(client_a, batch["id"], cluster)

    seen = [item["index"] for page in pages for item in page]
    assert len(seen) == len(set(seen)), "an item came back twice"
    assert sorted(seen) == list(range(size)), "an item was skipped"
    for page in pages:
        indexes = [item["index"] for item in page]
        assert len(indexes) == len(set(indexes))
    failed = {item["index"] for page in pages for item in page if item["status"] == "failed"}
    assert failed == failing
    for page in pages:
        for item in page:
            assert item["status"] in ("succeeded", "failed")
            if item["status"] == "succeeded":
                assert item["result"] == payload[item["index"]]
    live = [s for s, page in zip(statuses, pages, strict=True) if s == "running" and page]
    assert live, "no page was read while the batch was running; the test proved nothing"
    final = Batch.objects.get(pk=batch["id"])
    assert final.status == Batch.Status.FINISHED
    assert final.succeeded_items + final.failed_items == size
    ended = Item.objects.filter(batch=final, status__in=["succeeded", "failed"]).count()
    assert ended == len(seen)
