"""Progressive results read while a real qcluster is still writing them: no skip, no repeat."""

from __future__ import annotations

import os
import time

import pytest
from django.db.models import Max, Min

from batches.models import Batch, Chunk, Item
from tests.conftest import Cluster, wait_for
from tests.helpers.api import batch_url, create_batch

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

LIMIT = 100
TERMINAL = {status.value for status in Batch.TERMINAL}


def follow_results(
    client, batch_id, clusters: list[Cluster], *, timeout: float = 180
) -> tuple[list, list]:
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
            for cluster in clusters:
                print(cluster.output()[-5000:])
            raise AssertionError(f"results still had a next page after {timeout}s")
        if not page:
            time.sleep(0.05)  # nothing new yet: let the workers write some more


def assert_each_item_once(
    pages: list[list[dict]], statuses: list[str], *, payload: dict[int, dict], failing: set[int]
) -> list[int]:
    """Assert the pages listed every item once, failures as failed; return the indexes seen."""
    seen = [item["index"] for page in pages for item in page]
    assert len(seen) == len(set(seen)), "an item came back twice"
    assert sorted(seen) == sorted(payload), "an item was skipped"
    failed = {item["index"] for page in pages for item in page if item["status"] == "failed"}
    assert failed == failing
    for page in pages:
        for item in page:
            assert item["status"] in ("succeeded", "failed")
            if item["status"] == "succeeded":
                assert item["result"] == payload[item["index"]]
    live = [s for s, page in zip(statuses, pages, strict=True) if s == "running" and page]
    assert live, "no page was read while the batch was running; the test proved nothing"
    return seen


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

    pages, statuses = follow_results(client_a, batch["id"], [cluster])

    seen = assert_each_item_once(pages, statuses, payload=payload, failing=failing)
    final = Batch.objects.get(pk=batch["id"])
    assert final.status == Batch.Status.FINISHED
    assert final.succeeded_items + final.failed_items == size
    ended = Item.objects.filter(batch=final, status__in=["succeeded", "failed"]).count()
    assert ended == len(seen)


def wait_running(cluster: Cluster) -> None:
    """Wait until django-q2 says the cluster runs (it logs so at INFO, once it can take tasks)."""
    try:
        wait_for(lambda: " running." in cluster.output(), timeout=60)
    except AssertionError:
        print(cluster.output()[-5000:])
        raise


def writer_cluster(owner: str, clusters: list[Cluster]) -> int | None:
    """Return the pid of the cluster whose worker wrote under lease `owner`, None if gone.

    A lease owner is `host:pid:nonce`; each cluster runs in a session (and process group)
    of its own, so the worker's process group names its cluster.
    """
    pid = int(owner.rsplit(":", 2)[1])
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return None
    assert group in {cluster.process.pid for cluster in clusters}, (owner, group)
    return group


def most_clusters_at_once(spans: list[tuple[int, object, object]]) -> int:
    """Return the largest number of clusters that had a chunk running at the same time."""
    edges = sorted(
        [(start, 1, group) for group, start, _ in spans]
        + [(end, -1, group) for group, _, end in spans],
        key=lambda edge: (edge[0], edge[1]),
    )
    running: dict[int, int] = {}
    peak = 0
    for _, change, group in edges:
        running[group] = running.get(group, 0) + change
        peak = max(peak, sum(1 for n in running.values() if n > 0))
    return peak


def test_results__followed_while_three_clusters_write_list_every_item_exactly_once(
    client_a, cluster_factory
):
    # INFO from django-q2 prints the line wait_running looks for.
    env = {"BATCHSITE_Q_LOG_LEVEL": "INFO"}
    clusters = [cluster_factory(env=env) for _ in range(3)]
    # All three take tasks before the batch exists, so none finds the queue already empty.
    for cluster in clusters:
        wait_running(cluster)
    # 30 chunks of 100 items, written 10 at a time; the sleep keeps each chunk running
    # long enough that the six workers of the three clusters write at the same time.
    size = 3000
    failing = {0, 99, 100, 1234, 2999}
    payload = {n: {"n": n, "sleep_ms": 3, **({"crash": True} if n in failing else {})}
               for n in range(size)}  # fmt: skip
    batch = create_batch(
        client_a,
        type="test.flaky",
        items=[{"external_id": f"e{n}", "payload": payload[n]} for n in range(size)],
        commit=True,
    )

    pages, statuses = follow_results(client_a, batch["id"], clusters, timeout=120)

    assert_each_item_once(pages, statuses, payload=payload, failing=failing)
    final = Batch.objects.get(pk=batch["id"])
    assert final.status == Batch.Status.FINISHED
    assert (final.succeeded_items, final.failed_items) == (size - len(failing), len(failing))
    seqs = list(Item.objects.filter(batch=final).values_list("seq", flat=True))
    assert None not in seqs
    assert len(set(seqs)) == size
    # A done chunk keeps the lease owner of the worker that ran it to the end.
    chunks = list(Chunk.objects.filter(batch=final).order_by("start_index"))
    assert len(chunks) == size // 100
    assert {chunk.status for chunk in chunks} == {Chunk.Status.DONE}
    spans = []
    for chunk in chunks:
        group = writer_cluster(chunk.lease_owner, clusters)
        if group is None:
            continue  # its worker was recycled since
        span = Item.objects.filter(
            batch=final, index__gte=chunk.start_index, index__lt=chunk.end_index
        ).aggregate(start=Min("started_at"), end=Max("finished_at"))
        spans.append((group, span["start"], span["end"]))
    assert len({group for group, _, _ in spans}) == 3, "not every cluster wrote"
    # At least two at once is what the cursor must survive; three at once is likely but a
    # busy machine may start the third cluster's chunks a moment after the first ends.
    assert most_clusters_at_once(spans) >= 2, "the clusters never wrote at the same time"
