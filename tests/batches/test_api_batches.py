"""POST/GET batches/, GET/DELETE batches/{id}/, and the commit, cancel and rerun actions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches import services
from batches.models import Batch, BatchError, BatchEvent, Chunk, Item
from tests.factories import BatchFactory, open_batch
from tests.helpers.api import (
    BATCHES,
    assert_problem,
    batch_url,
    create_batch,
    error_fields,
    row_counts,
)


def items(n: int, **payload) -> list[dict]:
    return [{"payload": {"n": i, **payload}} for i in range(n)]


@pytest.fixture
def run_inline(django_capture_on_commit_callbacks):
    """Run what a block queues on commit (chunk tasks, in sync mode) when the block exits."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def finished_batch(client_a, run_inline) -> dict:
    """A batch of three echo items, the middle one failing, run to its end."""
    body = [{"payload": {"n": 0}}, {"payload": {"n": 1, "fail": True}}, {"payload": {"n": 2}}]
    with run_inline():
        batch = create_batch(client_a, items=body, commit=True)
    batch = client_a.get(batch_url(batch)).json()
    assert batch["status"] == "finished"
    return batch


# --- create --------------------------------------------------------------------------------------


def test_batch_create__empty_body_creates_an_empty_batch(client_a, account):
    response = client_a.post(BATCHES, {}, format="json")

    assert response.status_code == 201
    body = response.json()
    batch = Batch.objects.get(pk=body["id"])
    assert batch.account == account
    assert body["account"] == account.number
    assert body["number"] == batch.number
    assert body["status"] == "created"
    assert body["type"] == "echo"
    assert body["label"] == ""
    assert body["metadata"] == {}
    assert body["options"] == {
        "stop_on_error": False,
        "max_failures": None,
        "atomic": False,
        "not_before": None,
        "deadline": None,
        "retention_days": None,
        "callback_url": "",
        "webhook_events": ["batch.ended"],
        "priority": 0,
        "max_concurrency": None,
    }
    assert body["counts"] == {
        "total": 0,
        "pending": 0,
        "queued": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert body["progress"] == 0.0
    assert body["errors"] == []
    assert body["links"]["self"] == f"http://testserver{BATCHES}{batch.pk}/"
    assert body["links"]["items"] == f"http://testserver{BATCHES}{batch.pk}/items/"


def test_batch_create__keeps_label_metadata_options_and_items(client_a):
    response = client_a.post(
        BATCHES,
        {
            "type": "echo",
            "label": "March invoices",
            "metadata": {"customer": "c-1", "tags": ["a"]},
            "options": {
                "stop_on_error": True,
                "max_failures": 5,
                "atomic": True,
                "priority": 7,
                "max_concurrency": 2,
            },
            "items": items(3),
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "open"
    assert body["label"] == "March invoices"
    assert body["metadata"] == {"customer": "c-1", "tags": ["a"]}
    assert body["options"] == {
        "stop_on_error": True,
        "max_failures": 5,
        "atomic": True,
        "not_before": None,
        "deadline": None,
        "retention_days": None,
        "callback_url": "",
        "webhook_events": ["batch.ended"],
        "priority": 7,
        "max_concurrency": 2,
    }
    assert body["counts"]["total"] == body["counts"]["pending"] == 3
    payloads = Item.objects.filter(batch_id=body["id"]).order_by("index")
    assert [item.payload for item in payloads] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_batch_create__commit_queues_and_runs_the_batch(client_a, run_inline):
    with run_inline():
        response = client_a.post(BATCHES, {"items": items(3), "commit": True}, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == "committed"
    body = client_a.get(batch_url(response.json())).json()
    assert body["status"] == "finished"
    assert body["counts"]["succeeded"] == 3
    assert body["progress"] == 1.0


def test_batch_create__client_chosen_id_is_used(client_a):
    batch_id = uuid.uuid4()

    body = create_batch(client_a, id=str(batch_id), label="first")

    assert body["id"] == str(batch_id)
    assert Batch.objects.filter(pk=batch_id).exists()


def test_batch_create__same_id_from_same_account_returns_the_existing_batch(client_a):
    batch_id = str(uuid.uuid4())
    first = create_batch(client_a, id=batch_id, label="first", items=items(2))
    before = row_counts()

    response = client_a.post(
        BATCHES, {"id": batch_id, "label": "second", "items": items(5)}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == batch_id
    assert body["number"] == first["number"]
    assert body["label"] == "first"
    assert body["counts"]["total"] == 2
    assert row_counts() == before


def test_batch_create__id_taken_by_another_account_is_409(client_a, client_b):
    batch_id = str(uuid.uuid4())
    create_batch(client_a, id=batch_id, items=items(2))
    before = row_counts()

    response = client_b.post(BATCHES, {"id": batch_id, "items": items(1)}, format="json")

    assert_problem(response, 409, "batch_exists")
    assert row_counts() == before
    assert Batch.objects.get(pk=batch_id).total_items == 2


NEXT_YEAR = "2999-01-01T00:00:00Z"
DAY_AFTER = "2999-01-02T00:00:00Z"
CREATE_BAD_INPUT = [
    pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"options": {"atomic": "yes"}}, "options.atomic", id="atomic-str"),
    pytest.param({"options": {"atomic": 1}}, "options.atomic", id="atomic-int"),
    pytest.param({"options": {"stop_on_error": "true"}}, "options.stop_on_error", id="stop-str"),
    pytest.param({"options": {"max_failures": "5"}}, "options.max_failures", id="max-str"),
    pytest.param({"options": {"max_failures": 2.5}}, "options.max_failures", id="max-float"),
    pytest.param({"options": {"max_failures": True}}, "options.max_failures", id="max-bool"),
    pytest.param({"options": {"max_failures": -1}}, "options.max_failures", id="max-negative"),
    pytest.param({"options": {"retries": 3}}, "options.retries", id="unknown-option"),
    pytest.param({"options": "atomic"}, "options", id="options-str"),
    pytest.param({"options": {"not_before": "tomorrow"}}, "options.not_before", id="nb-garbage"),
    pytest.param(
        {"options": {"deadline": "2001-01-01T00:00:00Z"}}, "options.deadline", id="deadline-past"
    ),
    pytest.param(
        {"options": {"not_before": DAY_AFTER, "deadline": NEXT_YEAR}},
        "options.not_before",
        id="nb-after-deadline",
    ),
    pytest.param({"options": {"retention_days": "7"}}, "options.retention_days", id="keep-str"),
    pytest.param({"options": {"retention_days": -1}}, "options.retention_days", id="keep-neg"),
    pytest.param({"label": 5}, "label", id="label-int"),
    pytest.param({"label": "x" * 201}, "label", id="label-too-long"),
    pytest.param({"metadata": ["a"]}, "metadata", id="metadata-list"),
    pytest.param({"items": {"payload": {}}}, "items", id="items-object"),
    pytest.param({"commit": "true"}, "commit", id="commit-str"),
    pytest.param({"id": "not-a-uuid"}, "id", id="id-garbage"),
    pytest.param({"id": 123}, "id", id="id-int"),
    pytest.param({"type": "no.such.type"}, "type", id="type-unknown"),
    pytest.param({"type": 7}, "type", id="type-int"),
    pytest.param({"account": "1"}, "account", id="account-str"),
    pytest.param({"items": [{"payload": {"fail": "yes"}}]}, "[0].payload.fail", id="item-fail-str"),
    pytest.param(
        {"items": [{"payload": {}}, {"payload": {"sleep_ms": -1}}]},
        "[1].payload.sleep_ms",
        id="item-sleep-negative",
    ),
    pytest.param(
        {"items": [{"payload": {"transient_failures": "2"}}]},
        "[0].payload.transient_failures",
        id="item-transient-str",
    ),
    pytest.param({"items": [{"payload": {}, "type": "nope"}]}, "[0].type", id="item-type-unknown"),
    pytest.param(
        {"items": [{"payload": {}}, {"payload": {"fail": 1}}], "commit": True},
        "[1].payload.fail",
        id="item-fail-int-with-commit",
    ),
]


@pytest.mark.parametrize(("body", "field"), CREATE_BAD_INPUT)
def test_batch_create__bad_input_is_400_and_writes_nothing(client_a, body, field):
    before = row_counts()

    response = client_a.post(BATCHES, body, format="json")

    assert field in error_fields(assert_problem(response, 400, "invalid"))
    assert row_counts() == before


def test_batch_create__body_must_be_an_object(client_a):
    before = row_counts()

    response = client_a.post(BATCHES, [{"label": "x"}], format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {"body"}
    assert row_counts() == before


def test_batch_create__every_bad_field_is_reported_at_once(client_a):
    body = {"label": 5, "options": {"atomic": "yes", "max_failures": "5"}, "colour": "red"}

    response = client_a.post(BATCHES, body, format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {
        "label",
        "options.atomic",
        "options.max_failures",
        "colour",
    }


def test_batch_create__items_over_the_request_limit_write_nothing(client_a, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_REQUEST = 5
    before = row_counts()

    response = client_a.post(BATCHES, {"items": items(6), "commit": True}, format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {"items"}
    assert row_counts() == before


def test_batch_create__items_at_the_request_limit_are_accepted(client_a, settings):
    settings.BATCHSITE_MAX_ITEMS_PER_REQUEST = 5

    body = create_batch(client_a, items=items(5))

    assert body["counts"]["total"] == 5


def test_batch_create__commit_without_items_is_409_and_writes_nothing(client_a):
    before = row_counts()

    response = client_a.post(BATCHES, {"commit": True}, format="json")

    assert_problem(response, 409, "batch_empty")
    assert row_counts() == before


def test_batch_create__key_cannot_create_for_another_account(client_a, other_account):
    before = row_counts()

    response = client_a.post(BATCHES, {"account": other_account.number}, format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {"account"}
    assert row_counts() == before


def test_batch_create__staff_creates_for_the_named_account(staff_client, account):
    response = staff_client.post(BATCHES, {"account": account.number}, format="json")

    assert response.status_code == 201
    assert response.json()["account"] == account.number
    assert Batch.objects.get(pk=response.json()["id"]).account == account


@pytest.mark.parametrize("body", [{}, {"account": 999_999}])
def test_batch_create__staff_must_name_an_existing_account(staff_client, account, body):
    before = row_counts()

    response = staff_client.post(BATCHES, body, format="json")

    assert error_fields(assert_problem(response, 400, "invalid")) == {"account"}
    assert row_counts() == before


# --- list ----------------------------------------------------------------------------------------


def test_batch_list__pages_the_accounts_batches_newest_first(client_a, account):
    now = timezone.now()
    older = BatchFactory(account=account, created_at=now - timedelta(hours=2))
    newer = BatchFactory(account=account, created_at=now - timedelta(hours=1))

    response = client_a.get(BATCHES)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert body["next"] is None
    assert body["previous"] is None
    assert [b["id"] for b in body["results"]] == [str(newer.pk), str(older.pk)]
    assert "errors" not in body["results"][0]


def test_batch_list__page_size_and_page(client_a, account):
    now = timezone.now()
    batches = [
        BatchFactory(account=account, created_at=now - timedelta(minutes=n)) for n in range(5)
    ]

    first = client_a.get(f"{BATCHES}?page_size=2").json()
    second = client_a.get(first["next"]).json()

    assert first["count"] == 5
    assert [b["id"] for b in first["results"]] == [str(b.pk) for b in batches[:2]]
    assert [b["id"] for b in second["results"]] == [str(b.pk) for b in batches[2:4]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=open", {"open-echo"}),
        ("status=open&status=finished", {"open-echo", "finished-flaky"}),
        ("type=test.flaky", {"finished-flaky"}),
        ("label=ECHO", {"open-echo", "old-echo"}),
        ("created_after={cutoff}", {"open-echo", "finished-flaky"}),
        ("created_before={cutoff}", {"old-echo"}),
        ("status=cancelled", set()),
    ],
)
def test_batch_list__filters(client_a, account, query, expected):
    now = timezone.now()
    cutoff = now - timedelta(days=1)
    BatchFactory(account=account, label="open-echo", status="open", created_at=now)
    BatchFactory(
        account=account,
        label="finished-flaky",
        type="test.flaky",
        status="finished",
        created_at=now - timedelta(hours=1),
    )
    BatchFactory(
        account=account, label="old-echo", status="expired", created_at=now - timedelta(days=2)
    )

    response = client_a.get(f"{BATCHES}?{query.format(cutoff=quote(cutoff.isoformat()))}")

    assert response.status_code == 200
    assert {b["label"] for b in response.json()["results"]} == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("status=open&status=bogus", "status"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2024-13-45", "created_before"),
    ],
)
def test_batch_list__invalid_filter_is_400(client_a, account, query, field):
    BatchFactory(account=account)

    response = client_a.get(f"{BATCHES}?{query}")

    assert error_fields(assert_problem(response, 400, "invalid")) == {field}


def test_batch_list__query_count_does_not_grow_with_batches(
    client_a, account, django_assert_max_num_queries
):
    for _ in range(30):
        BatchFactory(account=account, status="open", total_items=3, pending_items=3)
    client_a.get(BATCHES)  # the first request of a key records its last use

    with django_assert_max_num_queries(5):
        response = client_a.get(BATCHES)

    assert response.status_code == 200
    assert len(response.json()["results"]) == 30


def test_batch_list__staff_sees_every_account(staff_client, account, other_account):
    mine = BatchFactory(account=account)
    theirs = BatchFactory(account=other_account)

    response = staff_client.get(BATCHES)

    assert response.status_code == 200
    assert {b["id"] for b in response.json()["results"]} == {str(mine.pk), str(theirs.pk)}


# --- retrieve ------------------------------------------------------------------------------------


def test_batch_retrieve__returns_counts_progress_and_first_20_errors(client_a, finished_batch):
    batch = Batch.objects.get(pk=finished_batch["id"])
    for n in range(25):
        BatchError.objects.create(batch=batch, index=n, code="bad_line", message=f"line {n}")

    response = client_a.get(batch_url(batch))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "finished"
    assert body["counts"] == {
        "total": 3,
        "pending": 0,
        "queued": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
    }
    assert body["progress"] == 1.0
    for stamp in ("created_at", "committed_at", "started_at", "finished_at"):
        assert body[stamp] is not None, stamp
    assert [e["index"] for e in body["errors"]] == list(range(20))
    assert body["errors"][0] == {
        "index": 0,
        "external_id": "",
        "code": "bad_line",
        "message": "line 0",
        "created_at": body["errors"][0]["created_at"],
    }


def test_batch_retrieve__counts_by_type_before_commit_and_once_ended(client_a, run_inline):
    body = [
        {"type": "echo", "payload": {"n": 0}},
        {"type": "test.flaky", "payload": {"n": 1}},
        {"type": "echo", "payload": {"n": 2, "fail": True}},
    ]
    batch = create_batch(client_a, items=body)
    zero = dict.fromkeys(["pending", "queued", "running", "succeeded", "failed", "cancelled"], 0)

    before = client_a.get(batch_url(batch)).json()["counts_by_type"]
    with run_inline():
        client_a.post(batch_url(batch, "commit/"))
    after = client_a.get(batch_url(batch)).json()["counts_by_type"]

    assert before == {
        "echo": {**zero, "total": 2, "pending": 2},
        "test.flaky": {**zero, "total": 1, "pending": 1},
    }
    assert after == {
        "echo": {**zero, "total": 2, "succeeded": 1, "failed": 1},
        "test.flaky": {**zero, "total": 1, "succeeded": 1},
    }


def queries_of(client, url: str) -> int:
    """Return how many queries a GET of `url` runs."""
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_batch_retrieve__query_count_does_not_grow_with_types_or_items(client_a, account):
    two_types = open_batch(
        account=account, items=[{"payload": {}}, {"type": "test.flaky", "payload": {}}]
    )
    types = ["echo", "test.flaky", "test.record", "test.paced"]
    many = open_batch(account=account, items=[{"type": t, "payload": {}} for t in types * 50])
    client_a.get(BATCHES)  # the first request of a key records its last use

    assert queries_of(client_a, batch_url(two_types)) == queries_of(client_a, batch_url(many))
    assert len(client_a.get(batch_url(many)).json()["counts_by_type"]) == 4


def test_batch_list__has_no_counts_by_type(client_a, account):
    open_batch(account=account, items=2)

    listed = client_a.get(BATCHES).json()["results"]

    assert "counts_by_type" not in listed[0]


def test_batch_retrieve__unknown_id_is_404(client_a):
    response = client_a.get(batch_url(uuid.uuid4()))

    assert_problem(response, 404, "not_found")


# --- delete --------------------------------------------------------------------------------------


def test_batch_delete__removes_the_batch_and_everything_in_it(client_a, finished_batch):
    batch_id = finished_batch["id"]
    BatchError.objects.create(batch_id=batch_id, index=1, code="bad_line", message="bad")

    response = client_a.delete(batch_url(batch_id))

    assert response.status_code == 204
    assert not Batch.objects.filter(pk=batch_id).exists()
    for model in (Item, BatchError, BatchEvent, Chunk):
        assert not model.objects.filter(batch_id=batch_id).exists(), model.__name__


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "items/"),
        ("get", "items/0/"),
        ("get", "results/"),
        ("get", "errors/"),
        ("get", "events/"),
        ("post", "items/"),
        ("post", "commit/"),
        ("post", "cancel/"),
        ("post", "rerun/"),
        ("delete", ""),
    ],
)
def test_batch_delete__every_later_request_is_404(client_a, account, method, suffix):
    batch = open_batch(account=account)
    assert client_a.delete(batch_url(batch)).status_code == 204

    if method == "post":
        body = {"payload": {}} if suffix == "items/" else {}
        response = client_a.post(batch_url(batch, suffix), body, format="json")
    else:
        response = getattr(client_a, method)(batch_url(batch, suffix))

    assert_problem(response, 404, "not_found")


def test_batch_delete__leaves_other_batches_alone(client_a, account):
    doomed = open_batch(account=account)
    kept = open_batch(account=account)

    client_a.delete(batch_url(doomed))

    assert Item.objects.filter(batch=kept).count() == 3
    assert client_a.get(batch_url(kept)).status_code == 200


# --- commit --------------------------------------------------------------------------------------


def test_batch_commit__queues_the_items_and_workers_finish_them(client_a, account, run_inline):
    batch = open_batch(account=account)

    with run_inline():
        response = client_a.post(batch_url(batch, "commit/"))

    assert response.status_code == 200
    assert response.json()["status"] == "committed"
    assert response.json()["committed_at"] is not None
    batch.refresh_from_db()
    assert batch.status == Batch.Status.FINISHED
    assert batch.counts()["succeeded"] == 3
    results = Item.objects.filter(batch=batch).order_by("index").values_list("result", flat=True)
    assert list(results) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_batch_commit__empty_batch_is_409(client_a, account):
    batch, _ = services.batch_create(account=account, actor="test")

    response = client_a.post(batch_url(batch, "commit/"))

    assert_problem(response, 409, "batch_empty")
    batch.refresh_from_db()
    assert batch.status == Batch.Status.CREATED
    assert batch.committed_at is None


@pytest.mark.parametrize("run", [False, True], ids=["queued", "finished"])
def test_batch_commit__second_commit_is_409(
    client_a, account, django_capture_on_commit_callbacks, run
):
    batch = open_batch(account=account)
    with django_capture_on_commit_callbacks(execute=run):
        client_a.post(batch_url(batch, "commit/"))
    batch.refresh_from_db()
    status, chunks = batch.status, Chunk.objects.filter(batch=batch).count()

    response = client_a.post(batch_url(batch, "commit/"))

    assert_problem(response, 409, "batch_already_committed")
    batch.refresh_from_db()
    assert batch.status == status
    assert Chunk.objects.filter(batch=batch).count() == chunks


def test_batch_commit__cancelled_batch_is_409(client_a, account):
    batch = open_batch(account=account)
    client_a.post(batch_url(batch, "cancel/"))

    response = client_a.post(batch_url(batch, "commit/"))

    assert_problem(response, 409, "batch_finished")
    batch.refresh_from_db()
    assert batch.status == Batch.Status.CANCELLED


def test_batch_commit__failed_items_are_reported_per_item(client_a, finished_batch):
    failed = Item.objects.get(batch_id=finished_batch["id"], index=1)

    assert finished_batch["counts"]["failed"] == 1
    assert failed.status == Item.Status.FAILED
    assert failed.error_code == "echo_failed"


def test_batch_commit__stop_on_error_stops_the_batch(client_a, run_inline):
    body = [{"payload": {"fail": True}}, {"payload": {}}]
    with run_inline():
        batch = create_batch(client_a, items=body, options={"stop_on_error": True}, commit=True)

    body = client_a.get(batch_url(batch)).json()

    assert body["status"] == "stopped"
    assert body["counts"]["failed"] == 1


def test_batch_commit__atomic_batch_with_a_failure_fails_and_publishes_nothing(
    client_a, run_inline
):
    body = [{"payload": {"n": 0}}, {"payload": {"fail": True}}]
    with run_inline():
        batch = create_batch(client_a, items=body, options={"atomic": True}, commit=True)

    detail = client_a.get(batch_url(batch)).json()
    listed = client_a.get(batch_url(batch, "items/")).json()["results"]

    assert detail["status"] == "failed"
    assert detail["counts"]["succeeded"] == 0
    assert [item["result"] for item in listed] == [None, None]


# --- cancel --------------------------------------------------------------------------------------


def test_batch_cancel__open_batch_cancels_its_items(client_a, account):
    batch = open_batch(account=account)

    response = client_a.post(batch_url(batch, "cancel/"))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["finished_at"] is not None
    assert body["counts"]["cancelled"] == 3
    assert body["counts"]["pending"] == 0
    assert set(Item.objects.filter(batch=batch).values_list("status", flat=True)) == {"cancelled"}


def test_batch_cancel__committed_batch_never_runs(
    client_a, account, django_capture_on_commit_callbacks
):
    batch = open_batch(account=account)
    with django_capture_on_commit_callbacks() as queued:
        client_a.post(batch_url(batch, "commit/"))

    response = client_a.post(batch_url(batch, "cancel/"))
    for chunk_task in queued:  # the workers get to the chunks only now
        chunk_task()

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    batch.refresh_from_db()
    assert batch.status == Batch.Status.CANCELLED
    assert batch.counts()["cancelled"] == 3
    assert not Item.objects.filter(batch=batch, result__isnull=False).exists()


@pytest.mark.parametrize("ending", ["finish", "cancel"])
def test_batch_cancel__ended_batch_is_409(client_a, account, run_inline, ending):
    batch = open_batch(account=account)
    with run_inline():
        client_a.post(batch_url(batch, "commit/" if ending == "finish" else "cancel/"))
    batch.refresh_from_db()
    status = batch.status

    response = client_a.post(batch_url(batch, "cancel/"))

    assert_problem(response, 409, "batch_finished")
    batch.refresh_from_db()
    assert batch.status == status


# --- rerun ---------------------------------------------------------------------------------------


def test_batch_rerun__failed_items_run_again(client_a, finished_batch, run_inline):
    batch_id = finished_batch["id"]
    succeeded = dict(
        Item.objects.filter(batch_id=batch_id, status="succeeded").values_list("index", "seq")
    )

    with run_inline():
        response = client_a.post(batch_url(batch_id, "rerun/"), {"items": "failed"}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "committed"
    assert response.json()["counts"]["queued"] == 1
    assert response.json()["counts"]["succeeded"] == 2
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == Batch.Status.FINISHED
    assert batch.counts()["failed"] == 1
    assert (
        dict(Item.objects.filter(batch_id=batch_id, status="succeeded").values_list("index", "seq"))
        == succeeded
    ), "succeeded items did not run again"
    rerun = BatchEvent.objects.get(batch_id=batch_id, kind="rerun")
    assert rerun.detail == {"items": "failed", "count": 1}


def test_batch_rerun__without_a_body_reruns_failed_items(client_a, finished_batch):
    response = client_a.post(batch_url(finished_batch, "rerun/"))

    assert response.status_code == 200
    assert response.json()["counts"]["queued"] == 1


def test_batch_rerun__all_items_run_again(client_a, finished_batch, run_inline):
    with run_inline():
        response = client_a.post(
            batch_url(finished_batch, "rerun/"), {"items": "all"}, format="json"
        )

    assert response.status_code == 200
    assert response.json()["counts"]["queued"] == 3
    batch = Batch.objects.get(pk=finished_batch["id"])
    assert batch.status == Batch.Status.FINISHED
    assert batch.counts()["succeeded"] == 2


@pytest.mark.parametrize("commit", [False, True], ids=["open", "committed"])
def test_batch_rerun__unended_batch_is_409(client_a, account, commit):
    batch = open_batch(account=account)
    if commit:
        client_a.post(batch_url(batch, "commit/"))  # callbacks not run: it stays committed
    batch.refresh_from_db()
    status = batch.status

    response = client_a.post(batch_url(batch, "rerun/"), {"items": "all"}, format="json")

    assert_problem(response, 409, "batch_not_finished")
    batch.refresh_from_db()
    assert batch.status == status


def test_batch_rerun__nothing_failed_is_409(client_a, account, run_inline):
    batch = open_batch(account=account)
    with run_inline():
        client_a.post(batch_url(batch, "commit/"))

    response = client_a.post(batch_url(batch, "rerun/"), {"items": "failed"}, format="json")

    assert_problem(response, 409, "nothing_to_rerun")
    batch.refresh_from_db()
    assert batch.status == Batch.Status.FINISHED


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": "some"}, "items"),
        ({"items": ["failed"]}, "items"),
        ({"items": None}, "items"),
        ({"which": "all"}, "which"),
    ],
)
def test_batch_rerun__bad_body_is_400_and_changes_nothing(client_a, finished_batch, body, field):
    before = row_counts()

    response = client_a.post(batch_url(finished_batch, "rerun/"), body, format="json")

    assert field in error_fields(assert_problem(response, 400, "invalid"))
    assert row_counts() == before
    assert Batch.objects.get(pk=finished_batch["id"]).status == Batch.Status.FINISHED


def test_batch_rerun__is_recorded_with_its_actor(client_a, finished_batch):
    client_a.post(batch_url(finished_batch, "rerun/"))

    event = BatchEvent.objects.get(batch_id=finished_batch["id"], kind="rerun")
    assert event.actor.startswith("key:")


def test_batch_commit__not_before_in_the_future_holds_the_batch(client_a, run_inline):
    not_before = (timezone.now() + timedelta(hours=1)).isoformat()
    with run_inline():
        batch = create_batch(
            client_a,
            items=[{"payload": {}}],
            options={"not_before": not_before},
            commit=True,
        )

    body = client_a.get(batch_url(batch)).json()

    assert body["status"] == "committed"
    assert body["options"]["not_before"] is not None
    assert body["counts"]["queued"] == 1
    assert body["started_at"] is None
