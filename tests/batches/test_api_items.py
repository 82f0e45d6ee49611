"""Items of a batch: adding, listing, one item; and results, errors and events."""

from __future__ import annotations

import pytest

from batches import services
from batches.models import Batch, BatchError, Item
from tests.factories import BatchFactory, ItemFactory, open_batch
from tests.helpers.api import assert_problem, batch_url, create_batch, error_fields, row_counts


@pytest.fixture
def run_inline(django_capture_on_commit_callbacks):
    """Run what a block queues on commit (chunk tasks, in sync mode) when the block exits."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def empty_batch(account) -> Batch:
    batch, _ = services.batch_create(account=account, actor="test")
    return batch


@pytest.fixture
def mixed_batch(client_a, run_inline) -> dict:
    """A finished batch: echo items 0 and 2 succeed, 1 fails; item 3 is test.flaky."""
    body = [
        {"external_id": "a", "payload": {"n": 0}},
        {"external_id": "b", "payload": {"n": 1, "fail": True}},
        {"external_id": "c", "key": "k-c", "payload": {"n": 2}},
        {"external_id": "d", "type": "test.flaky", "payload": {"n": 3}},
    ]
    with run_inline():
        batch = create_batch(client_a, items=body, commit=True)
    assert Batch.objects.get(pk=batch["id"]).status == Batch.Status.FINISHED
    return batch


# --- add -----------------------------------------------------------------------------------------


def test_items_add__one_object(client_a, empty_batch):
    response = client_a.post(
        batch_url(empty_batch, "items/"),
        {"external_id": "inv-1", "key": "k1", "type": "echo", "payload": {"n": 1}},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["added"] == 1
    assert body["first_index"] == body["last_index"] == 0
    assert body["batch"]["id"] == str(empty_batch.pk)
    assert body["batch"]["status"] == "open"
    assert body["batch"]["counts"]["total"] == body["batch"]["counts"]["pending"] == 1
    item = Item.objects.get(batch=empty_batch)
    assert (item.index, item.external_id, item.key, item.type, item.payload) == (
        0,
        "inv-1",
        "k1",
        "echo",
        {"n": 1},
    )


def test_items_add__a_list_continues_the_indexes(client_a, account):
    batch = open_batch(account=account)

    response = client_a.post(
        batch_url(batch, "items/"), [{"payload": {"n": 3}}, {"payload": {"n": 4}}], format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["added"], body["first_index"], body["last_index"]) == (2, 3, 4)
    assert body["batch"]["counts"]["total"] == 5
    indexes = Item.objects.filter(batch=batch).order_by("index").values_list("index", "payload")
    assert list(indexes)[3:] == [(3, {"n": 3}), (4, {"n": 4})]


def test_items_add__item_type_defaults_to_the_batch_type(client_a):
    batch = create_batch(client_a, type="test.flaky")

    client_a.post(batch_url(batch, "items/"), {"payload": {}}, format="json")

    assert Item.objects.get(batch_id=batch["id"]).type == "test.flaky"


ITEM_BAD_INPUT = [
    pytest.param({"payload": {"fail": "yes"}}, "payload.fail", id="fail-str"),
    pytest.param({"payload": {"fail": 1}}, "payload.fail", id="fail-int"),
    pytest.param({"payload": {"sleep_ms": -1}}, "payload.sleep_ms", id="sleep-negative"),
    pytest.param({"payload": {"sleep_ms": "5"}}, "payload.sleep_ms", id="sleep-str"),
    pytest.param({"payload": {"sleep_ms": True}}, "payload.sleep_ms", id="sleep-bool"),
    pytest.param(
        {"payload": {"transient_failures": 1.5}},
        "payload.transient_failures",
        id="transient-float",
    ),
    pytest.param(
        {"payload": {"transient_failures": -2}}, "payload.transient_failures", id="transient-neg"
    ),
    pytest.param({"payload": [1, 2]}, "payload", id="payload-list"),
    pytest.param({"external_id": "x"}, "payload", id="payload-missing"),
    pytest.param({"payload": {}, "colour": "red"}, "item", id="unknown-field"),
    pytest.param({"payload": {}, "type": "no.such.type"}, "type", id="type-unknown"),
    pytest.param({"payload": {}, "external_id": 5}, "external_id", id="external-id-int"),
    pytest.param({"payload": {}, "key": "k" * 256}, "key", id="key-too-long"),
    pytest.param("not an object", "item", id="not-an-object"),
]


@pytest.mark.parametrize(("bad", "field"), ITEM_BAD_INPUT)
def test_items_add__one_bad_item_in_a_list_writes_nothing(client_a, account, bad, field):
    batch = open_batch(account=account)
    before = row_counts()

    response = client_a.post(
        batch_url(batch, "items/"), [{"payload": {}}, bad, {"payload": {}}], format="json"
    )

    body = assert_problem(response, 400, "invalid")
    assert error_fields(body) == {f"[1].{field}"}
    assert row_counts() == before
    batch.refresh_from_db()
    assert batch.total_items == batch.pending_items == 3


def test_items_add__a_bad_single_object_is_reported_at_index_0(client_a, empty_batch):
    before = row_counts()

    response = client_a.post(
        batch_url(empty_batch, "items/"), {"payload": {"fail": "yes"}}, format="json"
    )

    assert error_fields(assert_problem(response, 400, "invalid")) == {"[0].payload.fail"}
    assert row_counts() == before
    empty_batch.refresh_from_db()
    assert empty_batch.status == Batch.Status.CREATED


def test_items_add__every_bad_item_is_reported(client_a, empty_batch):
    body = [{"payload": {"fail": "no"}}, {"payload": {}}, {"payload": {"sleep_ms": -5}}]

    response = client_a.post(batch_url(empty_batch, "items/"), body, format="json")

    problem = assert_problem(response, 400, "invalid")
    assert error_fields(problem) == {"[0].payload.fail", "[2].payload.sleep_ms"}


def test_items_add__empty_list_is_400(client_a, empty_batch):
    before = row_counts()

    response = client_a.post(batch_url(empty_batch, "items/"), [], format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {"items"}
    assert row_counts() == before


@pytest.mark.parametrize("body", ['"one item"', "42", "null"], ids=["string", "number", "null"])
def test_items_add__body_that_is_not_an_object_or_list_is_400(client_a, empty_batch, body):
    before = row_counts()

    response = client_a.post(
        batch_url(empty_batch, "items/"), body, content_type="application/json"
    )

    assert_problem(response, 400, "invalid")
    assert row_counts() == before


def test_items_add__over_the_request_limit_writes_nothing(client_a, empty_batch, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_REQUEST = 5
    before = row_counts()

    response = client_a.post(
        batch_url(empty_batch, "items/"), [{"payload": {"n": n}} for n in range(6)], format="json"
    )

    assert error_fields(assert_problem(response, 400, "invalid")) == {"items"}
    assert row_counts() == before


def test_items_add__at_the_request_limit_is_accepted(client_a, empty_batch, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_REQUEST = 5

    response = client_a.post(
        batch_url(empty_batch, "items/"), [{"payload": {"n": n}} for n in range(5)], format="json"
    )

    assert response.status_code == 201
    assert response.json()["added"] == 5


@pytest.mark.parametrize("action", ["commit", "run", "cancel"])
def test_items_add__to_a_closed_batch_is_409(
    client_a, account, django_capture_on_commit_callbacks, action
):
    batch = open_batch(account=account)
    with django_capture_on_commit_callbacks(execute=action == "run"):
        client_a.post(batch_url(batch, "cancel/" if action == "cancel" else "commit/"))
    before = row_counts()

    response = client_a.post(batch_url(batch, "items/"), {"payload": {}}, format="json")

    assert_problem(response, 409, "batch_not_open")
    assert row_counts() == before


# --- list ----------------------------------------------------------------------------------------


def test_items_list__pages_by_cursor_in_index_order(client_a, account):
    batch = open_batch(account=account, items=7)

    seen, pages = [], 0
    url = batch_url(batch, "items/?page_size=3")
    while url:
        response = client_a.get(url)
        assert response.status_code == 200
        seen += [item["index"] for item in response.json()["results"]]
        url, pages = response.json()["next"], pages + 1

    assert seen == list(range(7))
    assert pages == 3


def test_items_list__cursor_is_stable_while_items_are_added(client_a, account):
    batch = open_batch(account=account, items=4)
    first = client_a.get(batch_url(batch, "items/?page_size=2")).json()

    client_a.post(batch_url(batch, "items/"), {"payload": {"n": 4}}, format="json")
    second = client_a.get(first["next"]).json()

    assert [item["index"] for item in second["results"]] == [2, 3]


def test_items_list__shows_each_items_outcome(client_a, mixed_batch):
    response = client_a.get(batch_url(mixed_batch, "items/"))

    assert response.status_code == 200
    items = response.json()["results"]
    assert [item["status"] for item in items] == ["succeeded", "failed", "succeeded", "succeeded"]
    assert items[0]["result"] == {"n": 0}
    assert items[0]["error"] is None
    assert items[1]["result"] is None
    assert items[1]["error"] == {"code": "echo_failed", "message": "the payload asked echo to fail"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=failed", [1]),
        ("status=succeeded&status=failed", [0, 1, 2, 3]),
        ("status=queued", []),
        ("type=test.flaky", [3]),
        ("type=echo&status=succeeded", [0, 2]),
        ("external_id=c", [2]),
        ("external_id=zzz", []),
    ],
)
def test_items_list__filters(client_a, mixed_batch, query, expected):
    response = client_a.get(batch_url(mixed_batch, f"items/?{query}"))

    assert response.status_code == 200
    assert [item["index"] for item in response.json()["results"]] == expected


@pytest.mark.parametrize("query", ["status=bogus", "status=failed&status=done"])
def test_items_list__invalid_status_filter_is_400(client_a, mixed_batch, query):
    response = client_a.get(batch_url(mixed_batch, f"items/?{query}"))

    assert error_fields(assert_problem(response, 400, "invalid")) == {"status"}


def test_items_list__query_count_does_not_grow_with_items(
    client_a, account, django_assert_max_num_queries
):
    batch = BatchFactory(account=account, status="running", total_items=300)
    Item.objects.bulk_create(
        Item(batch=batch, index=n, type="echo", payload={"n": n}, status="succeeded", result={})
        for n in range(300)
    )
    client_a.get(batch_url(batch))  # the first request of a key records its last use

    with django_assert_max_num_queries(5):
        response = client_a.get(batch_url(batch, "items/?page_size=1000"))

    assert response.status_code == 200
    assert len(response.json()["results"]) == 300


# --- one item ------------------------------------------------------------------------------------


def test_item_retrieve__returns_the_item(client_a, mixed_batch):
    response = client_a.get(batch_url(mixed_batch, "items/2/"))

    assert response.status_code == 200
    body = response.json()
    assert body["index"] == 2
    assert body["external_id"] == "c"
    assert body["key"] == "k-c"
    assert body["type"] == "echo"
    assert body["status"] == "succeeded"
    assert body["payload"] == body["result"] == {"n": 2}
    assert body["attempts"] == 1
    assert body["started_at"] is not None
    assert body["finished_at"] is not None


def test_item_retrieve__unknown_index_is_404(client_a, mixed_batch):
    response = client_a.get(batch_url(mixed_batch, "items/4/"))

    assert_problem(response, 404, "not_found")


# --- atomic batches ------------------------------------------------------------------------------


@pytest.fixture
def atomic_running(account) -> Batch:
    """A running atomic batch: item 0 succeeded, item 1 still running."""
    batch = BatchFactory(account=account, atomic=True, status="running", total_items=2)
    ItemFactory(batch=batch, index=0, status="succeeded", result={"secret": 1}, seq=1)
    ItemFactory(batch=batch, index=1, status="running")
    return batch


def test_atomic__item_results_are_hidden_until_the_batch_finishes(client_a, atomic_running):
    listed = client_a.get(batch_url(atomic_running, "items/")).json()["results"]
    one = client_a.get(batch_url(atomic_running, "items/0/")).json()

    assert listed[0]["status"] == "succeeded"
    assert listed[0]["result"] is None
    assert one["result"] is None
    assert b"secret" not in client_a.get(batch_url(atomic_running, "items/")).content


def test_atomic__results_endpoint_publishes_nothing_until_the_batch_finishes(
    client_a, atomic_running
):
    response = client_a.get(batch_url(atomic_running, "results/"))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "running"
    assert body["results"] == {}
    assert body["statuses"] == {"succeeded": 1, "running": 1}
    assert body["next"] is not None


def test_atomic__results_appear_once_the_batch_finished(client_a, atomic_running):
    Item.objects.filter(batch=atomic_running, index=1).update(
        status="succeeded", result={"secret": 2}, seq=2
    )
    Batch.objects.filter(pk=atomic_running.pk).update(status="finished", last_seq=2)

    listed = client_a.get(batch_url(atomic_running, "items/")).json()["results"]
    results = client_a.get(batch_url(atomic_running, "results/")).json()

    assert [item["result"] for item in listed] == [{"secret": 1}, {"secret": 2}]
    assert [item["result"] for item in results["results"]["echo"]] == [{"secret": 1}, {"secret": 2}]


def test_atomic__run_through_the_engine_publishes_all_results(client_a, run_inline):
    body = [{"payload": {"n": n}} for n in range(3)]
    with run_inline():
        batch = create_batch(client_a, items=body, options={"atomic": True}, commit=True)

    results = client_a.get(batch_url(batch, "results/")).json()

    assert results["status"] == "finished"
    assert [item["result"] for item in results["results"]["echo"]] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]


# --- results -------------------------------------------------------------------------------------


def test_results__groups_ended_items_by_type_with_a_status_histogram(client_a, mixed_batch):
    response = client_a.get(batch_url(mixed_batch, "results/"))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "finished"
    assert body["statuses"] == {"succeeded": 3, "failed": 1}
    assert set(body["results"]) == {"echo", "test.flaky"}
    assert sorted(item["index"] for item in body["results"]["echo"]) == [0, 1, 2]
    assert [item["index"] for item in body["results"]["test.flaky"]] == [3]
    assert body["next"] is None


def test_results__pages_with_a_next_link(client_a, mixed_batch):
    seen, url = [], batch_url(mixed_batch, "results/?limit=3")
    first = client_a.get(url).json()
    assert "after=" in first["next"]

    while url:
        body = client_a.get(url).json()
        seen += [item["index"] for group in body["results"].values() for item in group]
        url = body["next"]

    assert sorted(seen) == [0, 1, 2, 3]


@pytest.fixture
def running_batch(account) -> Batch:
    """A running batch: item 1 ended first (seq 1), then item 0 (seq 2); item 2 is queued."""
    batch = BatchFactory(account=account, status="running", total_items=3)
    ItemFactory(batch=batch, index=0, status="failed", error_code="echo_failed", seq=2)
    ItemFactory(batch=batch, index=1, status="succeeded", result={"n": 1}, seq=1)
    ItemFactory(batch=batch, index=2, status="queued")
    return batch


def test_results__are_progressive_in_the_order_items_ended(client_a, running_batch):
    first = client_a.get(batch_url(running_batch, "results/")).json()
    Item.objects.filter(batch=running_batch, index=2).update(
        status="succeeded", result={"n": 2}, seq=3
    )
    Batch.objects.filter(pk=running_batch.pk).update(status="finished", last_seq=3)
    second = client_a.get(first["next"]).json()

    assert first["status"] == "running"
    assert [item["index"] for item in first["results"]["echo"]] == [1, 0]
    assert first["statuses"] == {"succeeded": 1, "failed": 1, "queued": 1}
    assert first["next"] is not None, "a running batch always has more to come"
    assert [item["index"] for item in second["results"]["echo"]] == [2]
    assert second["status"] == "finished"
    assert second["next"] is None


def test_results__a_running_batch_with_nothing_new_points_at_the_same_cursor(
    client_a, running_batch
):
    first = client_a.get(batch_url(running_batch, "results/")).json()

    again = client_a.get(first["next"]).json()

    assert again["results"] == {}
    assert again["next"] == first["next"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("type=test.flaky", {"test.flaky": [3]}),
        ("type=echo", {"echo": [0, 1, 2]}),
        ("status=failed", {"echo": [1]}),
        ("type=test.flaky&status=failed", {}),
    ],
)
def test_results__filter_by_type_and_status(client_a, mixed_batch, query, expected):
    response = client_a.get(batch_url(mixed_batch, f"results/?{query}"))

    assert response.status_code == 200
    grouped = response.json()["results"]
    assert {name: sorted(i["index"] for i in group) for name, group in grouped.items()} == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=-1", "after"),
        ("after=abc", "after"),
        ("after=1.5", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
    ],
)
def test_results__bad_cursor_or_limit_is_400(client_a, mixed_batch, query, field):
    response = client_a.get(batch_url(mixed_batch, f"results/?{query}"))

    assert error_fields(assert_problem(response, 400, "invalid")) == {field}


# --- errors and events ---------------------------------------------------------------------------


def test_errors__lists_every_error_in_order_by_cursor(client_a, account):
    batch = open_batch(account=account)
    for n in range(5):
        BatchError.objects.create(
            batch=batch, index=n * 10, external_id=f"line-{n}", code="bad_line", message=f"m{n}"
        )

    first = client_a.get(batch_url(batch, "errors/?page_size=3")).json()
    second = client_a.get(first["next"]).json()

    assert [e["index"] for e in first["results"]] == [0, 10, 20]
    assert [e["index"] for e in second["results"]] == [30, 40]
    assert second["next"] is None
    assert set(first["results"][0]) == {"index", "external_id", "code", "message", "created_at"}
    assert first["results"][1]["external_id"] == "line-1"


def test_errors__are_empty_for_a_clean_batch(client_a, mixed_batch):
    response = client_a.get(batch_url(mixed_batch, "errors/"))

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_events__record_the_batch_timeline(client_a, mixed_batch):
    response = client_a.get(batch_url(mixed_batch, "events/"))

    assert response.status_code == 200
    events = response.json()["results"]
    assert [e["kind"] for e in events] == [
        "created",
        "items_added",
        "committed",
        "started",
        "finished",
    ]
    assert events[0]["actor"].startswith("key:")
    assert events[1]["detail"] == {"count": 4}
    assert events[-1]["detail"]["failed"] == 1


def test_events__cancel_is_recorded(client_a, account):
    batch = open_batch(account=account)
    client_a.post(batch_url(batch, "cancel/"))

    events = client_a.get(batch_url(batch, "events/")).json()["results"]

    assert events[-1]["kind"] == "cancelled"
    assert events[-1]["actor"].startswith("key:")
