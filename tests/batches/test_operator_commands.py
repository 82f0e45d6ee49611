"""Tests for the operator commands: createbatch, batchstatus, cancelbatch, rerunbatch,
purgebatches."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import zipfile
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.utils import timezone
from rich.cells import cell_len
from rich.console import Console

from batches import engine, services
from batches.engine import planning
from batches.management import operator
from batches.management.commands.purgebatches import duration_parse
from batches.models import Account, Batch, BatchError, BatchEvent, Chunk, Item
from tests.factories import AccountFactory, BatchFactory, open_batch

S = Batch.Status


def run(*args) -> tuple[str, str]:
    """Run a management command; return what it wrote to stdout and stderr."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def render(renderable, *, width: int) -> str:
    """Return what a terminal `width` columns wide shows of a rich renderable."""
    console = Console(file=StringIO(), width=width, color_system=None, highlight=False)
    console.print(renderable)
    return console.file.getvalue()


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


@pytest.fixture
def jsonl_file(tmp_path) -> Path:
    return write_jsonl(
        tmp_path / "items.jsonl",
        [
            {"external_id": "a", "payload": {"n": 1}},
            "not json",
            {"external_id": "c", "payload": {"n": 3}},
        ],
    )


def run_to_end(batch: Batch, capture) -> Batch:
    """Commit the batch and run its chunks inline (django-q2 sync mode)."""
    with capture(execute=True):
        services.batch_commit(batch=batch, actor="test")
    batch.refresh_from_db()
    assert batch.is_terminal
    return batch


@pytest.fixture
def finished(account, django_capture_on_commit_callbacks) -> Batch:
    """A finished batch with one succeeded and one failed item."""
    batch = open_batch(account=account, items=[{"payload": {}}, {"payload": {"fail": True}}])
    return run_to_end(batch, django_capture_on_commit_callbacks)


# --- createbatch --------------------------------------------------------------------------------


def test_createbatch__jsonl_adds_the_good_lines_and_reports_the_bad(account, jsonl_file):
    out, err = run("createbatch", "--type", "echo", "--file", str(jsonl_file))

    batch = Batch.objects.get()
    assert batch.account == account
    assert (batch.status, batch.type, batch.total_items, batch.error_count) == (
        S.OPEN,
        "echo",
        2,
        1,
    )
    assert out.strip() == f"batch {batch.pk} number {batch.number}: added 2, rejected 1"
    assert "line 1: " in err
    assert BatchError.objects.get(batch=batch).index == 1
    external_ids = Item.objects.filter(batch=batch).order_by("index")
    assert list(external_ids.values_list("external_id", flat=True)) == ["a", "c"]


def test_createbatch__csv_columns_become_the_payload(account, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("external_id,city\nx1,Oslo\nx2,Bergen\n")

    out, _ = run("createbatch", "--type", "echo", "--file", str(path), "--label", "cities")

    batch = Batch.objects.get()
    assert "added 2, rejected 0" in out
    assert batch.label == "cities"
    items = Item.objects.filter(batch=batch).order_by("index")
    assert [(item.external_id, item.payload) for item in items] == [
        ("x1", {"city": "Oslo"}),
        ("x2", {"city": "Bergen"}),
    ]


def test_createbatch__zip_members_become_file_items(account, tmp_path):
    path = tmp_path / "package.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("one.txt", b"first")
        archive.writestr("two.txt", b"second")

    out, _ = run("createbatch", "--type", "test.stamp", "--file", str(path))

    batch = Batch.objects.get()
    assert "added 2, rejected 0" in out
    items = Item.objects.filter(batch=batch).order_by("index")
    assert [(item.external_id, item.type) for item in items] == [
        ("one.txt", "test.stamp"),
        ("two.txt", "test.stamp"),
    ]
    assert all(item.input_file for item in items)


def test_createbatch__commit_queues_the_batch(account, jsonl_file):
    out, _ = run("createbatch", "--type", "echo", "--file", str(jsonl_file), "--commit")

    batch = Batch.objects.get()
    assert batch.status == S.COMMITTED
    assert batch.queued_items == 2
    assert f"committed batch {batch.number}" in out


@pytest.mark.timeout(120)
def test_createbatch__commit_wait_processes_the_batch_and_exits_zero(transactional_db, tmp_path):
    AccountFactory(name="only")
    path = tmp_path / "package.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("doc.txt", b"sign me")

    out, _ = run(
        "createbatch", "--type", "test.stamp", "--file", str(path), "--commit", "--wait",
        "--interval", "0.05",
    )  # fmt: skip

    batch = Batch.objects.get()
    assert batch.status == S.FINISHED
    assert re.search(r"status\s+finished", out)
    assert re.search(r"1 succeeded", out)
    item = Item.objects.get(batch=batch)
    assert item.result == {"sha256": hashlib.sha256(b"sign me").hexdigest()}


@pytest.mark.timeout(120)
def test_createbatch__wait_fails_when_the_batch_does_not_end_finished(
    transactional_db, jsonl_file, monkeypatch
):
    AccountFactory(name="only")

    def cancel_instead_of_running(chunk_ids):
        # Another operator cancels the batch before any worker takes it.
        chunk = Chunk.objects.select_related("batch").get(pk=chunk_ids[0])
        services.batch_cancel(batch=chunk.batch, actor="someone else")

    monkeypatch.setattr(planning, "chunks_enqueue", cancel_instead_of_running)

    with pytest.raises(CommandError) as exc:
        run(
            "createbatch", "--type", "echo", "--file", str(jsonl_file), "--commit", "--wait",
            "--interval", "0.05",
        )  # fmt: skip

    batch = Batch.objects.get()
    assert batch.status == S.CANCELLED
    assert one_line(exc) == (
        f"batch {batch.number} ended cancelled: 0 succeeded, 0 failed, 2 cancelled"
    )


@pytest.mark.timeout(120)
def test_createbatch__wait_counts_failed_items_as_failed_and_fails(transactional_db, tmp_path):
    AccountFactory(name="only")
    path = write_jsonl(
        tmp_path / "items.jsonl",
        [
            {"payload": {"n": 0}},
            {"external_id": "second", "payload": {"fail": True}},
            {"payload": {"fail": True}},
        ],
    )

    with pytest.raises(CommandError) as exc:
        run(
            "createbatch", "--type", "echo", "--file", str(path), "--commit", "--wait",
            "--interval", "0.05",
        )  # fmt: skip

    batch = Batch.objects.get()
    assert (batch.status, batch.succeeded_items, batch.failed_items) == (S.FINISHED, 1, 2)
    assert one_line(exc) == (
        f"batch {batch.number} finished with failed items: 1 succeeded, 2 failed, 0 cancelled"
    )


def test_batch_summary__counts_failed_items_as_failed_and_says_why(
    account, django_capture_on_commit_callbacks
):
    batch = open_batch(
        account=account,
        items=[
            {"payload": {}},
            {"external_id": "second", "payload": {"fail": True}},
            *[{"payload": {"fail": True}}] * 6,
        ],
    )
    batch = run_to_end(batch, django_capture_on_commit_callbacks)

    out = render(operator.batch_summary(batch), width=80)

    assert re.search(r"items\s+8 total · 0 pending · 0 queued · 0 running · 1 succeeded", out)
    assert re.search(r"^failed\s+7 items\s*$", out, re.MULTILINE)
    assert "  item 1 (second) failed: echo_failed: the payload asked echo to fail" in out
    assert "  item 5 failed: echo_failed: the payload asked echo to fail" in out
    assert "  … and 2 more failed items" in out
    assert "item 6 failed" not in out
    assert all(cell_len(line) <= 80 for line in out.splitlines())


def test_createbatch__the_only_account_is_the_default(db, jsonl_file):
    only = AccountFactory(name="solo")

    run("createbatch", "--type", "echo", "--file", str(jsonl_file))

    assert Batch.objects.get().account == only


def test_createbatch__without_accounts_creates_demo(db, jsonl_file):
    run("createbatch", "--type", "echo", "--file", str(jsonl_file))

    assert Batch.objects.get().account == Account.objects.get(name="demo")


@pytest.mark.parametrize("by", ["name", "number"])
def test_createbatch__account_by_name_or_number(account, other_account, jsonl_file, by):
    reference = other_account.name if by == "name" else str(other_account.number)

    run("createbatch", "--type", "echo", "--file", str(jsonl_file), "--account", reference)

    assert Batch.objects.get().account == other_account


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "{missing}"], "file {missing} not found"),
        (["--file", "{txt}"], "cannot tell the format of notes.txt from its extension"),
        (["--file", "{jsonl}", "--type", "no.such.type"], "unknown job type 'no.such.type'"),
        (["--file", "{jsonl}", "--wait"], "--wait needs --commit"),
        (["--file", "{jsonl}", "--account", "nobody"], "no account named or numbered 'nobody'"),
        (["--file", "{empty}", "--commit"], "empty.jsonl: the file holds no items"),
        (["--file", "{badzip}", "--type", "test.stamp"], "bad.zip: the body is not a ZIP file"),
        (["--file", "{jsonl}", "--interval", "0"], "--interval must be more than 0"),
    ],
)
def test_createbatch__bad_arguments_are_one_line_errors_and_create_nothing(
    account, tmp_path, jsonl_file, args, message
):
    files = {
        "missing": tmp_path / "missing.jsonl",
        "txt": tmp_path / "notes.txt",
        "jsonl": jsonl_file,
        "empty": tmp_path / "empty.jsonl",
        "badzip": tmp_path / "bad.zip",
    }
    files["txt"].write_text("hello")
    files["empty"].write_text("")
    files["badzip"].write_bytes(b"not a zip")
    args = [arg.format(**files) for arg in args]
    if "--type" not in args:
        args += ["--type", "echo"]

    with pytest.raises(CommandError) as exc:
        run("createbatch", *args)

    assert message.format(**files) in one_line(exc)
    assert not Batch.objects.exists()
    assert not Item.objects.exists()


def test_createbatch__type_is_required(account, jsonl_file):
    with pytest.raises(CommandError, match="--type"):
        run("createbatch", "--file", str(jsonl_file))


def test_createbatch__several_accounts_need_account(account, other_account, jsonl_file):
    with pytest.raises(CommandError) as exc:
        run("createbatch", "--type", "echo", "--file", str(jsonl_file))

    assert "--account" in one_line(exc)
    assert not Batch.objects.exists()


def test_createbatch__inactive_account_is_refused(account, jsonl_file):
    Account.objects.filter(pk=account.pk).update(is_active=False)

    with pytest.raises(CommandError, match="inactive"):
        run("createbatch", "--type", "echo", "--file", str(jsonl_file))

    assert not Batch.objects.exists()


def test_createbatch__commit_of_a_file_with_only_bad_lines_is_refused(account, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", ["nope", "{"])

    with pytest.raises(CommandError) as exc:
        run("createbatch", "--type", "echo", "--file", str(path), "--commit")

    batch = Batch.objects.get()
    assert one_line(exc) == (
        f"cannot commit batch {batch.number}: batch has no items; add items before committing"
    )
    assert batch.status == S.CREATED
    assert batch.error_count == 2


# --- batchstatus --------------------------------------------------------------------------------


def test_batchstatus__without_id_prints_a_table_of_recent_batches(account, finished):
    other = open_batch(account=account, items=2)

    out, _ = run("batchstatus")

    assert "recent batches" in out
    rows = {
        number: line
        for line in out.splitlines()
        for number in (finished.number, other.number)
        if str(finished.pk if number == finished.number else other.pk) in line
    }
    assert "finished" in rows[finished.number]
    assert "open" in rows[other.number]
    assert out.index(str(other.pk)) < out.index(str(finished.pk))


def test_batchstatus__limit_keeps_the_newest(account):
    batches = [open_batch(account=account, items=1) for _ in range(3)]

    out, _ = run("batchstatus", "--limit", "2")

    assert str(batches[0].pk) not in out
    assert str(batches[1].pk) in out
    assert str(batches[2].pk) in out


def test_batchstatus__without_batches_says_so(db):
    out, _ = run("batchstatus")

    assert out.strip() == "no batches yet"


@pytest.mark.parametrize("by", ["uuid", "number"])
def test_batchstatus__shows_one_batch_by_id_or_number(finished, by):
    reference = str(finished.pk) if by == "uuid" else str(finished.number)

    out, _ = run("batchstatus", reference)

    assert re.search(r"status\s+finished", out)
    assert re.search(r"progress\s+100\.0%", out)
    assert "1 succeeded" in out
    assert "1 failed" in out
    assert str(finished.pk) in out


def test_batchstatus__lists_the_first_errors(account):
    batch = open_batch(account=account, items=1)
    BatchError.objects.create(
        batch=batch, index=4, external_id="row-4", code="invalid_json", message="is not JSON"
    )

    out, _ = run("batchstatus", str(batch.number))

    assert "line 4 (row-4): invalid_json: is not JSON" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999999"], "no batch 999999"),
        (["5f0c1c7e-8d1c-4a43-9f3a-2b1d9e1f0a11"], "no batch 5f0c1c7e-8d1c-4a43"),
        (["last-one"], "'last-one' is neither a batch id (a UUID) nor a batch number"),
        (["--watch"], "--watch needs a batch ID"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_batchstatus__bad_arguments_are_one_line_errors(finished, args, message):
    with pytest.raises(CommandError) as exc:
        run("batchstatus", *args)

    assert message in one_line(exc)


def test_batchstatus_watch__ended_batch_returns_at_once(finished):
    out, _ = run("batchstatus", str(finished.number), "--watch")

    assert re.search(r"status\s+finished", out)
    assert "2/2" in out


@pytest.mark.timeout(120)
def test_batchstatus_watch__returns_when_the_batch_ends(transactional_db, monkeypatch):
    batch = open_batch(account=AccountFactory(), items=5)
    chunk_ids: list[int] = []
    # Commit without running: the chunks are left for the "worker" thread below.
    monkeypatch.setattr(planning, "chunks_enqueue", chunk_ids.extend)
    services.batch_commit(batch=batch, actor="test")
    assert chunk_ids
    watched = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds):
        watched.set()  # the watcher has seen the batch unfinished at least once
        real_sleep(seconds)

    monkeypatch.setattr(operator.time, "sleep", sleep)
    failures: list[BaseException] = []

    def worker():
        try:
            assert watched.wait(timeout=60)
            for chunk_id in chunk_ids:
                engine.chunk_process(chunk_id=chunk_id)
        except BaseException as exc:
            failures.append(exc)
            raise
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        out, _ = run("batchstatus", str(batch.number), "--watch", "--interval", "0.05")
    finally:
        thread.join(timeout=60)

    assert not failures
    assert watched.is_set()
    assert Batch.objects.get(pk=batch.pk).status == S.FINISHED
    assert re.search(r"status\s+finished", out)
    assert "5 succeeded" in out


def test_figures__break_only_between_two_figures():
    figures = operator.Figures(["12,345 ok", "6 failed", "0 cancelled"])

    assert figures.lines(200) == ["12,345 ok · 6 failed · 0 cancelled"]
    assert figures.lines(22) == ["12,345 ok · 6 failed", "0 cancelled"]
    assert figures.lines(5) == ["12,345 ok", "6 failed", "0 cancelled"]


def test_batch_watch__the_progress_display_fits_80_columns_with_big_figures(account):
    now = timezone.now()
    batch = BatchFactory(
        account=account,
        number=1_234_567,
        status=S.RUNNING,
        total_items=12_345_678,
        succeeded_items=9_876_543,
        failed_items=1_234_567,
        cancelled_items=0,
        queued_items=1_234_568,
        last_outcome_at=now,
        rate_from_at=now - timedelta(seconds=100),
        rate_from_ended=11_111_110 - 1_234_567,
    )
    console = Console(file=StringIO(), width=80, color_system=None, highlight=False)
    progress = operator._progress(console)
    task_id = progress.add_task("", total=None, number=batch.number, status="", figures=[])

    operator._progress_show(progress, task_id, batch)
    console.print(progress.get_renderable())

    lines = console.file.getvalue().splitlines()
    assert all(cell_len(line) <= 80 for line in lines), lines
    assert "…" not in "".join(lines)
    assert re.match(r"batch 1234567 running +━+.* 11111110/12345678 +90%$", lines[0])
    figures = " · ".join(line.strip() for line in lines[1:])
    assert figures == (
        "9,876,543 ok · 1,234,567 failed · 0 cancelled · 12,345.7 items/s · ETA 0:01:40"
    )


def test_batchstatus_watch__deleted_batch_is_an_error(account, monkeypatch):
    batch = open_batch(account=account, items=1)

    def delete_while_watching(seconds):
        services.batch_delete(batch=batch, actor="test")

    monkeypatch.setattr(operator.time, "sleep", delete_while_watching)

    with pytest.raises(CommandError) as exc:
        run("batchstatus", str(batch.number), "--watch")

    assert one_line(exc) == f"batch {batch.number} was deleted while being watched"


# --- cancelbatch --------------------------------------------------------------------------------


def test_cancelbatch__cancels_an_open_batch(account):
    batch = open_batch(account=account, items=3)

    out, _ = run("cancelbatch", str(batch.pk))

    batch.refresh_from_db()
    assert batch.status == S.CANCELLED
    assert batch.cancelled_items == 3
    assert out.strip() == (
        f"batch {batch.number} is cancelled: 3 items cancelled, 0 succeeded, 0 failed"
    )
    assert BatchEvent.objects.get(batch=batch, kind="cancelled").actor.startswith("cli:")


def test_cancelbatch__running_batch_winds_down(account, django_capture_on_commit_callbacks):
    batch = open_batch(account=account, items=3)
    with django_capture_on_commit_callbacks():
        services.batch_commit(batch=batch, actor="test")
    Chunk.objects.filter(batch=batch).update(status=Chunk.Status.RUNNING)

    out, _ = run("cancelbatch", str(batch.number))

    assert Batch.objects.get(pk=batch.pk).status == S.CANCELLING
    assert f"batch {batch.number} is cancelling" in out


def test_cancelbatch__finished_batch_is_refused(finished):
    with pytest.raises(CommandError) as exc:
        run("cancelbatch", str(finished.number))

    assert one_line(exc) == (
        f"cannot cancel batch {finished.number}: batch is finished; there is nothing left to cancel"
    )
    finished.refresh_from_db()
    assert finished.status == S.FINISHED
    assert finished.cancelled_items == 0


def test_cancelbatch__unknown_batch_is_an_error(db):
    with pytest.raises(CommandError, match="no batch 42"):
        run("cancelbatch", "42")


# --- rerunbatch ---------------------------------------------------------------------------------


def test_rerunbatch__queues_the_failed_items(finished):
    out, _ = run("rerunbatch", str(finished.number))

    finished.refresh_from_db()
    assert finished.status == S.COMMITTED
    assert (finished.queued_items, finished.succeeded_items) == (1, 1)
    assert out.strip() == f"batch {finished.number} is committed: 1 item queued again"


def test_rerunbatch__all_queues_every_item(finished):
    out, _ = run("rerunbatch", str(finished.pk), "--all")

    finished.refresh_from_db()
    assert (finished.queued_items, finished.succeeded_items) == (2, 0)
    assert "2 items queued again" in out


def test_rerunbatch__runs_again_when_the_queue_does(finished, django_capture_on_commit_callbacks):
    failed = Item.objects.get(batch=finished, status=Item.Status.FAILED)

    with django_capture_on_commit_callbacks(execute=True):
        run("rerunbatch", str(finished.number))

    finished.refresh_from_db()
    assert finished.status == S.FINISHED
    assert Item.objects.get(pk=failed.pk).seq > failed.seq


def test_rerunbatch__open_batch_is_refused(account):
    batch = open_batch(account=account, items=2)

    with pytest.raises(CommandError) as exc:
        run("rerunbatch", str(batch.number))

    assert one_line(exc) == (
        f"cannot rerun batch {batch.number}: batch is open; only an ended batch can be rerun"
    )
    assert Batch.objects.get(pk=batch.pk).status == S.OPEN


def test_rerunbatch__nothing_failed_is_refused(account, django_capture_on_commit_callbacks):
    batch = run_to_end(open_batch(account=account, items=2), django_capture_on_commit_callbacks)

    with pytest.raises(CommandError, match="batch has no failed items to rerun"):
        run("rerunbatch", str(batch.number))

    assert Batch.objects.get(pk=batch.pk).status == S.FINISHED


# --- purgebatches -------------------------------------------------------------------------------


def ended_days_ago(batch: Batch, days: float) -> Batch:
    Batch.objects.filter(pk=batch.pk).update(finished_at=timezone.now() - timedelta(days=days))
    batch.refresh_from_db()
    return batch


@pytest.fixture
def aged(account, django_capture_on_commit_callbacks) -> dict[str, Batch]:
    """Ended batches old and new, and an old batch that never ended."""

    def finished_batch():
        return run_to_end(open_batch(account=account, items=2), django_capture_on_commit_callbacks)

    old_cancelled = services.batch_cancel(batch=open_batch(account=account), actor="test")
    never_ended = open_batch(account=account)
    Batch.objects.filter(pk=never_ended.pk).update(created_at=timezone.now() - timedelta(days=90))
    return {
        "old": ended_days_ago(finished_batch(), 40),
        "old_cancelled": ended_days_ago(old_cancelled, 31),
        "recent": ended_days_ago(finished_batch(), 29),
        "open": never_ended,
    }


def test_purgebatches__dry_run_lists_and_deletes_nothing(aged):
    out, _ = run("purgebatches", "--older-than", "30d", "--dry-run")

    assert Batch.objects.count() == 4
    listed = [line for line in out.splitlines() if line.startswith("would purge batch")]
    assert len(listed) == 2
    assert str(aged["old"].pk) in listed[0]
    assert str(aged["old_cancelled"].pk) in listed[1]
    assert out.splitlines()[-1].startswith("would purge 2 batches that ended before")


def test_purgebatches__deletes_only_ended_batches_older_than_the_cutoff(aged):
    out, _ = run("purgebatches", "--older-than", "30d")

    left = set(Batch.objects.values_list("pk", flat=True))
    assert left == {aged["recent"].pk, aged["open"].pk}
    assert not Item.objects.filter(batch_id=aged["old"].pk).exists()
    assert Item.objects.filter(batch_id=aged["recent"].pk).count() == 2
    assert f"purged batch {aged['old'].number}" in out
    assert out.splitlines()[-1].startswith("purged 2 batches")


@pytest.mark.parametrize(("text", "kept"), [("12h", {"open"}), ("90m", {"open"})])
def test_purgebatches__hours_and_minutes(aged, text, kept):
    run("purgebatches", "--older-than", text)

    assert set(Batch.objects.values_list("pk", flat=True)) == {aged[name].pk for name in kept}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_duration_parse__units(text, expected):
    assert duration_parse(text) == expected


@pytest.mark.parametrize("text", ["30", "30x", "thirty days", "-5d", "0d", "1.5d", ""])
def test_purgebatches__bad_older_than_is_a_one_line_error(aged, text):
    with pytest.raises(CommandError) as exc:
        run("purgebatches", f"--older-than={text}")

    assert "e.g. 30d, 12h or 90m" in one_line(exc)
    assert Batch.objects.count() == 4


def test_purgebatches__older_than_is_required(db):
    with pytest.raises(CommandError, match="--older-than"):
        run("purgebatches")
