"""Tests for the Django admin: pages render, state is read-only, actions go through services."""

from __future__ import annotations

import pytest
from django.contrib import messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from batches import services
from batches.admin import BatchAdmin
from batches.models import (
    Account,
    ApiKey,
    Batch,
    BatchError,
    BatchEvent,
    Chunk,
    Item,
    Lock,
    Sequence,
)
from tests.factories import AccountFactory, ApiKeyFactory, open_batch

S = Batch.Status


def changelist(model) -> str:
    return reverse(f"admin:batches_{model._meta.model_name}_changelist")


def change(model, pk) -> str:
    return reverse(f"admin:batches_{model._meta.model_name}_change", args=[pk])


def shown(response) -> list:
    """Return the rows a changelist response shows."""
    return list(response.context["cl"].result_list)


def flashed(response) -> list[tuple[int, str]]:
    """Return the (level, text) of the messages a followed response carries."""
    return [(message.level, str(message)) for message in response.context["messages"]]


def run_action(admin_client, action: str, batches) -> object:
    return admin_client.post(
        changelist(Batch),
        {"action": action, "_selected_action": [str(batch.pk) for batch in batches]},
        follow=True,
    )


@pytest.fixture
def finished(account, django_capture_on_commit_callbacks) -> Batch:
    """A batch that ran to `finished` with one succeeded and one failed item."""
    batch = open_batch(
        account=account,
        items=[
            {"external_id": "ok-0", "payload": {"n": 0}},
            {"external_id": "bad-1", "payload": {"fail": True}},
        ],
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_commit(batch=batch, actor="test")
    batch.refresh_from_db()
    assert (batch.status, batch.succeeded_items, batch.failed_items) == (S.FINISHED, 1, 1)
    return batch


@pytest.fixture
def data(account, finished) -> dict:
    """One row of every model, plus a second open batch in another account."""
    other = open_batch(account=AccountFactory(name="globex"), items=2)
    Batch.objects.filter(pk=other.pk).update(label="nightly import")
    BatchError.objects.create(
        batch=finished, index=7, external_id="line-7", code="invalid_json", message="is not JSON"
    )
    ApiKeyFactory(account=account, name="deploy")
    Lock.objects.create(name="sweep", owner="worker-1")
    return {"account": account, "finished": finished, "other": other}


# --- pages render -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", [Account, ApiKey, Batch, Item, BatchError, BatchEvent, Chunk, Lock, Sequence]
)
def test_admin_changelist__renders_with_data(admin_client, data, model):
    response = admin_client.get(changelist(model))

    assert response.status_code == 200
    assert shown(response)


@pytest.mark.parametrize(
    "model", [Account, ApiKey, Batch, Item, BatchError, BatchEvent, Chunk, Lock, Sequence]
)
def test_admin_change_page__renders_with_data(admin_client, data, model):
    obj = model.objects.order_by("pk").first()

    response = admin_client.get(change(model, obj.pk))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("model", "query", "expected"),
    [
        (Account, lambda d: {"q": "globex"}, lambda d: {"globex"}),
        (Account, lambda d: {"q": str(d["account"].number)}, lambda d: {"acme"}),
        (Account, lambda d: {"is_active__exact": "1"}, lambda d: {"acme", "globex"}),
        (ApiKey, lambda d: {"q": "deploy"}, lambda d: {"deploy"}),
        (ApiKey, lambda d: {"revoked__exact": "1"}, lambda d: set()),
    ],
)
def test_admin_changelist__search_and_filters_on_accounts_and_keys(
    admin_client, data, model, query, expected
):
    response = admin_client.get(changelist(model), query(data))

    assert response.status_code == 200
    assert {row.name for row in shown(response)} == expected(data)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (lambda d: {"q": str(d["finished"].number)}, "finished"),
        (lambda d: {"q": str(d["other"].pk)}, "other"),
        (lambda d: {"q": "nightly"}, "other"),
        (lambda d: {"q": "globex"}, "other"),
        (lambda d: {"status__exact": "open"}, "other"),
        (lambda d: {"status__exact": "finished"}, "finished"),
        (lambda d: {"account__id__exact": str(d["account"].pk)}, "finished"),
    ],
)
def test_batch_changelist__search_and_filters(admin_client, data, query, expected):
    response = admin_client.get(changelist(Batch), query(data))

    assert response.status_code == 200
    assert [batch.pk for batch in shown(response)] == [data[expected].pk]


def test_batch_changelist__type_filter_lists_registered_types(admin_client, data):
    response = admin_client.get(changelist(Batch), {"type": "test.stamp"})

    assert response.status_code == 200
    assert shown(response) == []
    assert "document.sign" in response.content.decode()


@pytest.mark.parametrize(
    ("model", "query", "count"),
    [
        (Item, lambda d: {"batch": str(d["finished"].pk)}, 2),
        (Item, lambda d: {"batch": str(d["other"].number)}, 2),
        (Item, lambda d: {"batch": "not-a-batch"}, 0),
        (Item, lambda d: {"status__exact": "failed"}, 1),
        (Item, lambda d: {"type": "echo", "status__exact": "pending"}, 2),
        (Item, lambda d: {"q": "bad-1"}, 1),
        (Item, lambda d: {"q": "BAD-1"}, 0),
        (BatchError, lambda d: {"batch": str(d["finished"].pk)}, 1),
        (BatchError, lambda d: {"code__exact": "invalid_json"}, 1),
        (BatchError, lambda d: {"q": "line-7"}, 1),
        (BatchEvent, lambda d: {"batch": str(d["finished"].pk), "kind__exact": "committed"}, 1),
        (BatchEvent, lambda d: {"q": "finished"}, 1),
        (Chunk, lambda d: {"status__exact": "done"}, 1),
        (Chunk, lambda d: {"batch": str(d["other"].pk)}, 0),
        (Lock, lambda d: {"q": "sweep"}, 1),
        (Sequence, lambda d: {"q": "batch"}, 1),
    ],
)
def test_admin_changelist__search_and_filters(admin_client, data, model, query, count):
    response = admin_client.get(changelist(model), query(data))

    assert response.status_code == 200
    assert len(shown(response)) == count


# --- state is read-only -------------------------------------------------------------------------


def batch_form(batch: Batch, **fields) -> dict:
    """Return a change-form POST for the batch: its editable fields and empty inlines."""
    return {
        "label": batch.label,
        "metadata": "{}",
        "retention_days": "",
        "priority": str(batch.priority),
        "errors-TOTAL_FORMS": "0",
        "errors-INITIAL_FORMS": "0",
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
        **fields,
    }


def test_batch_change__posting_cannot_change_status_or_counters(admin_client, data):
    batch = data["other"]
    before = Batch.objects.get(pk=batch.pk)

    response = admin_client.post(
        change(Batch, batch.pk),
        batch_form(
            batch,
            label="renamed",
            status="finished",
            total_items="99",
            succeeded_items="99",
            finished_at="2020-01-01 00:00:00",
        ),
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    after = Batch.objects.get(pk=batch.pk)
    assert after.label == "renamed"
    assert after.status == before.status == S.OPEN
    assert after.counts() == before.counts()
    assert after.finished_at is None
    assert BatchEvent.objects.filter(batch=batch, kind="edited").exists()


def test_batch_change__an_operator_can_raise_a_batchs_priority(admin_client, data):
    batch = Batch.objects.get(pk=data["other"].pk)

    response = admin_client.post(change(Batch, batch.pk), batch_form(batch, priority="9"))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Batch.objects.get(pk=batch.pk).priority == 9
    event = BatchEvent.objects.get(batch=batch, kind="edited")
    assert "priority" in event.detail["fields"]


def test_batch_change__saving_keeps_counters_written_meanwhile(admin_client, data, monkeypatch):
    batch = data["other"]
    load = BatchAdmin.get_object

    def load_then_a_worker_writes(self, request, object_id, from_field=None):
        obj = load(self, request, object_id, from_field)
        if request.method == "POST":
            Batch.objects.filter(pk=obj.pk).update(status=S.RUNNING, queued_items=5)
        return obj

    monkeypatch.setattr(BatchAdmin, "get_object", load_then_a_worker_writes)

    response = admin_client.post(change(Batch, batch.pk), batch_form(batch, label="renamed"))

    assert response.status_code == 302

    after = Batch.objects.get(pk=batch.pk)
    assert (after.label, after.status, after.queued_items) == ("renamed", S.RUNNING, 5)


def test_batch_change__status_and_counters_are_not_form_fields(admin_client, data):
    response = admin_client.get(change(Batch, data["other"].pk))

    form = response.context["adminform"].form
    assert set(form.fields) == {"label", "metadata", "retention_days", "priority"}


@pytest.mark.parametrize("model", [Item, BatchError, BatchEvent, Chunk, Lock, Sequence])
def test_admin__engine_tables_are_view_only(admin_client, data, model):
    obj = model.objects.order_by("pk").first()

    response = admin_client.get(change(model, obj.pk))

    assert response.context["has_change_permission"] is False
    assert response.context["has_delete_permission"] is False
    assert not response.context["adminform"].form.fields


def test_batch_admin__has_no_add_page_and_no_bulk_delete(admin_client, data):
    assert admin_client.get(reverse("admin:batches_batch_add")).status_code == 403
    response = admin_client.get(changelist(Batch))
    actions = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions
    assert {
        "cancel_batches",
        "pause_batches",
        "resume_batches",
        "rerun_failed_items",
        "purge_batches",
    } <= set(actions)


# --- actions ------------------------------------------------------------------------------------


def test_batch_action_cancel__cancels_an_open_batch(admin_client, data):
    batch = data["other"]

    response = run_action(admin_client, "cancel_batches", [batch])

    batch.refresh_from_db()
    assert batch.status == S.CANCELLED
    assert batch.cancelled_items == 2
    assert (messages.SUCCESS, "Cancelled 1 batch.") in flashed(response)
    event = BatchEvent.objects.get(batch=batch, kind="cancelled")
    assert event.actor == "admin:admin"


def test_batch_action_cancel__finished_batch_is_refused_with_a_warning(admin_client, data):
    batch = data["finished"]
    events = BatchEvent.objects.filter(batch=batch).count()

    response = run_action(admin_client, "cancel_batches", [batch])

    assert flashed(response) == [
        (
            messages.WARNING,
            f"Batch {batch.number}: batch is finished; there is nothing left to cancel",
        )
    ]
    batch.refresh_from_db()
    assert batch.status == S.FINISHED
    assert (batch.succeeded_items, batch.failed_items, batch.cancelled_items) == (1, 1, 0)
    assert BatchEvent.objects.filter(batch=batch).count() == events


def test_batch_action_cancel__reports_each_refusal_and_the_successes(admin_client, data):
    response = run_action(admin_client, "cancel_batches", [data["finished"], data["other"]])

    levels = sorted(level for level, _ in flashed(response))
    assert levels == [messages.SUCCESS, messages.WARNING]
    assert Batch.objects.get(pk=data["other"].pk).status == S.CANCELLED


def test_batch_action_pause_and_resume__go_through_the_services(admin_client, data):
    batch = services.batch_commit(batch=data["other"], actor="test")

    paused = run_action(admin_client, "pause_batches", [batch, data["finished"]])
    batch.refresh_from_db()
    assert batch.paused_at is not None
    assert (messages.SUCCESS, "Paused 1 batch.") in flashed(paused)
    assert any(level == messages.WARNING for level, _ in flashed(paused))

    resumed = run_action(admin_client, "resume_batches", [batch])
    batch.refresh_from_db()
    assert batch.paused_at is None
    assert (messages.SUCCESS, "Resumed 1 batch.") in flashed(resumed)
    events = BatchEvent.objects.filter(batch=batch, kind__in=["paused", "resumed"])
    assert [(e.kind, e.actor) for e in events] == [
        ("paused", "admin:admin"),
        ("resumed", "admin:admin"),
    ]


def test_batch_action_rerun_failed__runs_only_the_failed_items_again(
    admin_client, data, django_capture_on_commit_callbacks
):
    batch = data["finished"]
    ok_before = Item.objects.get(batch=batch, external_id="ok-0")
    bad_before = Item.objects.get(batch=batch, external_id="bad-1")

    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, "rerun_failed_items", [batch])

    assert (messages.SUCCESS, "Queued the failed items of 1 batch.") in flashed(response)
    rerun = BatchEvent.objects.get(batch=batch, kind="rerun")
    assert rerun.detail == {"items": "failed", "count": 1}
    ok_after = Item.objects.get(pk=ok_before.pk)
    bad_after = Item.objects.get(pk=bad_before.pk)
    assert ok_after.seq == ok_before.seq
    assert bad_after.seq > bad_before.seq
    batch.refresh_from_db()
    assert batch.status == S.FINISHED
    assert batch.counts()["failed"] == 1


def test_batch_action_rerun_failed__open_batch_is_refused(admin_client, data):
    batch = data["other"]

    response = run_action(admin_client, "rerun_failed_items", [batch])

    assert flashed(response) == [
        (messages.WARNING, f"Batch {batch.number}: batch is open; only an ended batch can be rerun")
    ]
    assert Batch.objects.get(pk=batch.pk).status == S.OPEN


def test_batch_action_purge__deletes_ended_batches_and_keeps_live_ones(admin_client, data):
    finished, live = data["finished"], data["other"]

    response = run_action(admin_client, "purge_batches", [finished, live])

    assert not Batch.objects.filter(pk=finished.pk).exists()
    assert not Item.objects.filter(batch_id=finished.pk).exists()
    assert not BatchError.objects.filter(batch_id=finished.pk).exists()
    assert Batch.objects.filter(pk=live.pk, status=S.OPEN).exists()
    assert Item.objects.filter(batch_id=live.pk).count() == 2
    assert sorted(flashed(response)) == sorted(
        [
            (messages.SUCCESS, "Purged 1 batch."),
            (
                messages.WARNING,
                f"Batch {live.number}: batch is open; only an ended batch can be purged "
                "(cancel it first)",
            ),
        ]
    )


def test_batch_delete__goes_through_the_service(admin_client, data):
    batch = data["finished"]

    confirm = admin_client.get(reverse("admin:batches_batch_delete", args=[batch.pk]))
    response = admin_client.post(
        reverse("admin:batches_batch_delete", args=[batch.pk]), {"post": "yes"}
    )

    assert confirm.status_code == 200
    assert f"{batch} with 2 items" in confirm.content.decode()
    assert response.status_code == 302
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not BatchError.objects.filter(batch_id=batch.pk).exists()


# --- the batch page -----------------------------------------------------------------------------


def test_batch_change_page__shows_errors_events_and_a_link_to_its_items(admin_client, data):
    batch = data["finished"]

    response = admin_client.get(change(Batch, batch.pk))

    html = response.content.decode()
    inlines = {
        formset.formset.prefix: formset for formset in response.context["inline_admin_formsets"]
    }
    assert set(inlines) == {"errors", "events"}
    assert [form.instance.code for form in inlines["errors"].formset.forms] == ["invalid_json"]
    kinds = {form.instance.kind for form in inlines["events"].formset.forms}
    assert {"created", "committed", "finished"} <= kinds
    assert "is not JSON" in html
    items_url = f"{changelist(Item)}?batch={batch.pk}"
    assert f'href="{items_url}"' in html
    listed = admin_client.get(changelist(Batch)).content.decode()
    assert f'href="{items_url}"' in listed
    items = admin_client.get(items_url)
    assert {item.batch_id for item in shown(items)} == {batch.pk}
    assert len(shown(items)) == 2


def test_batch_change_page__inlines_show_only_the_first_errors(admin_client, data):
    batch = data["finished"]
    BatchError.objects.bulk_create(
        BatchError(batch=batch, index=n, code="bad", message=f"line {n}") for n in range(120)
    )

    response = admin_client.get(change(Batch, batch.pk))

    errors = next(
        f for f in response.context["inline_admin_formsets"] if f.formset.prefix == "errors"
    )
    assert len(errors.formset.forms) == 50
    assert errors.formset.forms[0].instance.index == 7


# --- the item changelist stays cheap ------------------------------------------------------------


def test_item_changelist__bounded_queries_for_200_items(
    admin_client, account, django_assert_max_num_queries
):
    batches = [open_batch(account=account, items=100) for _ in range(2)]
    assert Item.objects.count() == 200

    with django_assert_max_num_queries(8):
        response = admin_client.get(changelist(Item), {"all": ""})

    assert len(shown(response)) == 200
    assert {item.batch_id for item in shown(response)} == {batch.pk for batch in batches}


def test_item_changelist__counts_rows_from_the_batch_counters(admin_client, account):
    open_batch(account=account, items=30)
    open_batch(account=account, items=12)

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist(Item))

    assert response.context["cl"].result_count == 42
    counts_over_items = [
        q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "batches_item" in q["sql"]
    ]
    assert counts_over_items == []
    # Ordered by the (batch, index) index, not by the batches' default order through a join.
    item_queries = [q["sql"] for q in queries if 'FROM "batches_item"' in q["sql"]]
    assert item_queries
    for sql in item_queries:
        assert sql.split("ORDER BY")[1].split("LIMIT")[0].strip() == (
            '"batches_item"."batch_id" ASC, "batches_item"."index" ASC'
        )


def test_item_changelist__filtered_list_counts_its_rows(admin_client, account):
    batch = open_batch(account=account, items=30)
    open_batch(account=account, items=12)

    response = admin_client.get(changelist(Item), {"batch": str(batch.pk)})

    assert response.context["cl"].result_count == 30


def test_account_admin__add_gives_the_next_account_number(admin_client, data):
    response = admin_client.post(
        reverse("admin:batches_account_add"), {"name": "initech", "is_active": "on"}
    )

    assert response.status_code == 302
    created = Account.objects.get(name="initech")
    assert created.number == Sequence.objects.get(name="account").last
    assert created.created_at <= timezone.now()
    assert created.is_active


def test_apikey_action_revoke__revokes_selected_keys(admin_client, data):
    key = ApiKey.objects.get(name="deploy")

    response = admin_client.post(
        reverse("admin:batches_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [str(key.pk)]},
        follow=True,
    )

    key.refresh_from_db()
    assert key.revoked
    assert (messages.SUCCESS, "Revoked 1 API key.") in flashed(response)
