"""A stateful property test of the service layer, the engine's worker path and the sweep.

Hypothesis drives random sequences of transitions (create, add items, commit, cancel,
rerun, delete), worker steps (run a chunk, die holding one) and sweeps, and checks after
every step that the tables agree with each other: counters equal a recount, ended
batches hold nothing unfinished, every run ends exactly once, refusals change nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from batches import engine, services
from batches.engine import planning, sweep
from batches.exceptions import (
    BatchAlreadyCommitted,
    BatchEmpty,
    BatchFinished,
    BatchNotFinished,
    BatchNotOpen,
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
)
from batches.models import Batch, BatchError, BatchEvent, Chunk, Item
from jobs.echo import Echo
from tests.helpers import recount

S = Batch.Status
ACTOR = "machine"
# Before its commit a batch has no chunks and no committed_at.
PRE_COMMIT = frozenset({S.CREATED, S.OPEN, S.INGESTING})
INVALID_ITEMS = (
    {"payload": {"fail": "yes"}},
    {"payload": []},
    {"payload": {}, "colour": "blue"},
    "not an object",
)

options_strategy = st.fixed_dictionaries(
    {},
    optional={
        "stop_on_error": st.booleans(),
        "max_failures": st.integers(min_value=0, max_value=2),
        "atomic": st.booleans(),
    },
)
fails_strategy = st.lists(st.booleans(), min_size=1, max_size=5)
# Mostly valid lists; now and then one bad item that must get the whole call refused.
invalid_strategy = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.tuples(st.integers(min_value=0, max_value=5), st.sampled_from(INVALID_ITEMS)),
)
picks = st.integers(min_value=0, max_value=10_000)
# Few batches at a time, so the walk takes each of them far through its lifecycle.
MAX_LIVE_BATCHES = 3


class WorkerKilled(BaseException):
    """Stands for a worker process killed mid-slice: nothing in the engine catches it."""


@dataclass
class Tracked:
    """What the machine knows about a batch independently of the database."""

    options: dict
    payloads: list[dict] = field(default_factory=list)


def snapshot(batch_id) -> tuple:
    """Return every row of the batch, to prove a refused transition changed nothing."""
    return (
        Batch.objects.filter(pk=batch_id).values().first(),
        list(
            Item.objects.filter(batch_id=batch_id)
            .order_by("index")
            .values_list("index", "status", "result", "error_code", "attempts", "seq")
        ),
        list(
            Chunk.objects.filter(batch_id=batch_id)
            .order_by("pk")
            .values_list("pk", "status", "lease_owner", "lease_expires_at", "attempts")
        ),
        list(BatchEvent.objects.filter(batch_id=batch_id).order_by("pk").values_list("pk", "kind")),
        list(BatchError.objects.filter(batch_id=batch_id).order_by("pk").values_list("pk")),
    )


def claimable_chunks(batch_ids) -> list[Chunk]:
    """Return the chunks a worker could claim now: queued, or left by a dead worker."""
    return list(
        Chunk.objects.filter(batch_id__in=batch_ids)
        .filter(
            Q(status=Chunk.Status.QUEUED)
            | Q(status=Chunk.Status.RUNNING, lease_expires_at__lt=timezone.now())
        )
        .order_by("pk")
    )


class BatchMachine(RuleBasedStateMachine):
    """Random walks over the batch lifecycle with a worker that runs only when told to."""

    def __init__(self):
        super().__init__()
        # Each example runs in a savepoint rolled back in teardown(), so examples never
        # see each other's rows.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.account = services.account_create(name=f"machine-{uuid.uuid4().hex}")
        self.tracked: dict[uuid.UUID, Tracked] = {}
        self.live: list[uuid.UUID] = []
        self.deleted: list[uuid.UUID] = []
        self.next_tag = 0

    def teardown(self):
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- helpers --------------------------------------------------------------------------------

    def _any(self, pick: int) -> uuid.UUID:
        known = self.live + self.deleted
        return known[pick % len(known)]

    def _live(self, pick: int) -> uuid.UUID:
        return self.live[pick % len(self.live)]

    def _status(self, batch_id) -> str | None:
        return Batch.objects.filter(pk=batch_id).values_list("status", flat=True).first()

    def _items(self, fails: list[bool], invalid) -> tuple[list, list[dict]]:
        """Return the items to send and the payloads that land if they are accepted."""
        payloads = []
        for fail in fails:
            self.next_tag += 1
            payloads.append({"tag": self.next_tag, **({"fail": True} if fail else {})})
        items: list = [{"payload": payload} for payload in payloads]
        if invalid is not None:
            position, bad = invalid
            items.insert(min(position, len(items)), bad)
        return items, payloads

    def _refused(self, batch_id, expected: type[DomainError], call) -> DomainError:
        """Assert `call` raises exactly `expected` and leaves every row of the batch as it was."""
        before = snapshot(batch_id)
        with pytest.raises(DomainError) as caught:
            call()
        assert type(caught.value) is expected, (caught.value, expected)
        assert snapshot(batch_id) == before
        return caught.value

    def _statuses(self, batch_id) -> list[str]:
        return list(
            Item.objects.filter(batch_id=batch_id)
            .order_by("index")
            .values_list("status", flat=True)
        )

    # --- client transitions ---------------------------------------------------------------------

    @precondition(lambda self: len(self.live) < MAX_LIVE_BATCHES)
    @rule(options=options_strategy)
    def create_batch(self, options):
        batch, created = services.batch_create(account=self.account, actor=ACTOR, options=options)
        assert created
        assert Batch.objects.get(pk=batch.pk).status == S.CREATED
        self.tracked[batch.pk] = Tracked(options=options)
        self.live.append(batch.pk)

    @precondition(lambda self: len(self.live) < MAX_LIVE_BATCHES)
    @rule(options=options_strategy, fails=fails_strategy)
    def create_committed_batch(self, options, fails):
        items, payloads = self._items(fails, None)
        batch, _ = services.batch_create(
            account=self.account, actor=ACTOR, options=options, items=items, commit=True
        )
        self.tracked[batch.pk] = Tracked(options=options, payloads=payloads)
        self.live.append(batch.pk)
        assert Batch.objects.get(pk=batch.pk).status == S.COMMITTED
        assert set(self._statuses(batch.pk)) == {Item.Status.QUEUED}

    @precondition(lambda self: self.live or self.deleted)
    @rule(pick=picks, fails=fails_strategy, invalid=invalid_strategy)
    def add_items(self, pick, fails, invalid):
        batch_id = self._any(pick)
        status = self._status(batch_id)
        items, payloads = self._items(fails, invalid)

        def call():
            return services.items_add(batch=batch_id, items=items, actor=ACTOR)

        if status is None:
            self._refused(batch_id, NotFound, call)
        elif status not in Batch.ACCEPTS_ITEMS:
            self._refused(batch_id, BatchNotOpen, call)
        elif invalid is not None:
            error = self._refused(batch_id, InvalidInput, call)
            assert [e["index"] for e in error.errors] == [min(invalid[0], len(fails))]
        else:
            tracked = self.tracked[batch_id]
            added = call()
            assert list(added) == list(
                range(len(tracked.payloads), len(tracked.payloads) + len(payloads))
            )
            tracked.payloads.extend(payloads)
            assert self._status(batch_id) == S.OPEN

    @precondition(lambda self: self.live or self.deleted)
    @rule(pick=picks)
    def commit(self, pick):
        batch_id = self._any(pick)
        batch = Batch.objects.filter(pk=batch_id).first()

        def call():
            return services.batch_commit(batch=batch_id, actor=ACTOR)

        if batch is None:
            self._refused(batch_id, NotFound, call)
        elif batch.status == S.CREATED:
            self._refused(batch_id, BatchEmpty, call)
        elif batch.committed_at is not None:
            self._refused(batch_id, BatchAlreadyCommitted, call)
        elif batch.is_terminal:
            self._refused(batch_id, BatchFinished, call)
        elif batch.status != S.OPEN:
            self._refused(batch_id, BatchNotOpen, call)
        else:
            assert call().status == S.COMMITTED
            assert self._status(batch_id) == S.COMMITTED
            assert set(self._statuses(batch_id)) == {Item.Status.QUEUED}

    @precondition(lambda self: self.live or self.deleted)
    @rule(pick=picks)
    def cancel(self, pick):
        batch_id = self._any(pick)
        status = self._status(batch_id)

        def call():
            return services.batch_cancel(batch=batch_id, actor=ACTOR)

        if status is None:
            self._refused(batch_id, NotFound, call)
        elif status in Batch.TERMINAL or status == S.FINALIZING:
            self._refused(batch_id, BatchFinished, call)
        elif status == S.CANCELLING:
            before = snapshot(batch_id)
            assert call().status == S.CANCELLING
            assert snapshot(batch_id) == before
        else:
            returned = call()
            after = Batch.objects.get(pk=batch_id)
            assert returned.status == after.status
            if status in PRE_COMMIT:
                assert after.status == S.CANCELLED
                assert set(self._statuses(batch_id)) <= {Item.Status.CANCELLED}
            else:
                assert after.status in (S.CANCELLED, S.CANCELLING)
                assert not Item.objects.filter(
                    batch_id=batch_id, status__in=[Item.Status.PENDING, Item.Status.QUEUED]
                ).exists()

    @precondition(lambda self: self.live or self.deleted)
    @rule(pick=picks, which=st.sampled_from(["failed", "all"]))
    def rerun(self, pick, which):
        batch_id = self._any(pick)
        batch = Batch.objects.filter(pk=batch_id).first()

        def call():
            return services.batch_rerun(batch=batch_id, which=which, actor=ACTOR)

        if batch is None:
            self._refused(batch_id, NotFound, call)
            return
        if not batch.is_terminal:
            self._refused(batch_id, BatchNotFinished, call)
            return
        if which == "all":
            rerun_statuses = set(Item.ENDED)
        elif batch.atomic:
            rerun_statuses = {Item.Status.FAILED, Item.Status.CANCELLED}
        else:
            rerun_statuses = {Item.Status.FAILED}
        before = self._statuses(batch_id)
        if not rerun_statuses & set(before):
            error = self._refused(batch_id, Conflict, call)
            assert error.code == "nothing_to_rerun"
            return
        assert call().status == S.COMMITTED
        after = Batch.objects.get(pk=batch_id)
        assert (after.status, after.finished_at, after.ending) == (S.COMMITTED, None, "")
        expected = [Item.Status.QUEUED if s in rerun_statuses else s for s in before]
        assert self._statuses(batch_id) == expected
        assert set(Chunk.objects.filter(batch_id=batch_id).values_list("status", flat=True)) == {
            Chunk.Status.QUEUED
        }

    @precondition(lambda self: self.live or self.deleted)
    @rule(pick=picks, deleted=st.booleans())
    def delete(self, pick, deleted):
        if deleted and self.deleted:
            batch_id = self.deleted[pick % len(self.deleted)]
            self._refused(
                batch_id, NotFound, lambda: services.batch_delete(batch=batch_id, actor=ACTOR)
            )
            return
        if not self.live:
            return
        batch_id = self._live(pick)
        services.batch_delete(batch=batch_id, actor=ACTOR)
        self.live.remove(batch_id)
        self.deleted.append(batch_id)

    # --- workers and the sweep ------------------------------------------------------------------

    @precondition(lambda self: self.live)
    @rule(pick=picks, how=st.sampled_from(["runner", "process"]), drain=st.booleans())
    def worker_runs_a_chunk(self, pick, how, drain):
        """Run one claimable chunk; with drain, then every other one of its batch too."""
        chunks = claimable_chunks(self.live)
        if not chunks:
            return
        chunk = chunks[pick % len(chunks)]
        batch_id = chunk.batch_id
        while chunk is not None:
            if how == "runner":
                claimed = engine.chunk_claim(chunk_id=chunk.pk, owner="worker")
                assert claimed is not None
                result = engine.ChunkRunner(chunk=claimed, owner="worker").run()
            else:
                result = engine.chunk_process(chunk_id=chunk.pk)
            assert result == "done"
            assert Chunk.objects.get(pk=chunk.pk).status == Chunk.Status.DONE
            # Draining, the workers go on with the batch's next chunk, if any is left.
            chunk = next(iter(claimable_chunks([batch_id])), None) if drain else None

    @precondition(lambda self: self.live)
    @rule(pick=picks, slices_written=st.none() | st.integers(min_value=0, max_value=2))
    def worker_dies_holding_a_chunk(self, pick, slices_written):
        """Claim a chunk and die: at once (None), or mid-slice after writing some slices."""
        chunks = claimable_chunks(self.live)
        if not chunks:
            return
        chunk = chunks[pick % len(chunks)]
        owner = f"doomed-{uuid.uuid4().hex[:6]}"
        claimed = engine.chunk_claim(chunk_id=chunk.pk, owner=owner)
        assert claimed is not None
        if slices_written is not None:
            run_slice = engine.ChunkRunner._run_slice
            calls = []

            def run_slice_then_die(runner, rows):
                # Killed after marking a slice running, before writing its outcomes.
                calls.append(rows)
                if len(calls) > slices_written:
                    raise WorkerKilled
                return run_slice(runner, rows)

            try:
                with mock.patch.object(engine.ChunkRunner, "_run_slice", run_slice_then_die):
                    result = engine.ChunkRunner(chunk=claimed, owner=owner).run()
            except WorkerKilled:
                pass
            else:
                # It ran out of work (or the batch is cancelling) before its time came.
                assert result == "done"
        Chunk.objects.filter(pk=chunk.pk, status=Chunk.Status.RUNNING, lease_owner=owner).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )

    @precondition(lambda self: self.live)
    @rule(pick=picks, limit=st.sampled_from(["deadline", "ttl"]))
    def time_passes(self, pick, limit):
        """Let a batch's deadline pass, or let it grow older than the open-batch TTL."""
        now = timezone.now()
        batches = Batch.objects.filter(pk=self._live(pick))
        if limit == "deadline":
            batches.update(deadline=now - timedelta(seconds=1))
        else:
            ttl = django_settings.BATCHSITE_OPEN_BATCH_TTL
            batches.update(created_at=now - timedelta(seconds=ttl + 60))

    @rule()
    def sweep_runs(self):
        now = timezone.now()
        stale = now - timedelta(seconds=django_settings.BATCHSITE_OPEN_BATCH_TTL)
        settled = [*Batch.TERMINAL, S.CANCELLING, S.FINALIZING]
        due = set(
            Batch.objects.filter(pk__in=self.live)
            .filter(
                Q(status__in=[S.CREATED, S.OPEN], created_at__lt=stale)
                | (Q(deadline__lt=now) & ~Q(status__in=settled))
            )
            .values_list("pk", flat=True)
        )

        report = sweep.sweep_run()

        assert "skipped" not in report
        # Nothing here ends long enough ago to be purged.
        assert report["purged"] == 0
        if report["abandoned"]:
            # A worker_lost failure may have stopped a batch before its time ran out.
            assert report["expired"] <= len(due)
            return
        assert report["expired"] == len(due), (report, due)
        for batch in Batch.objects.filter(pk__in=due):
            assert batch.status == S.EXPIRED or (
                batch.status == S.CANCELLING and batch.ending == S.EXPIRED
            ), batch.status

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def deleted_batches_are_gone(self):
        for batch_id in self.deleted:
            assert not Batch.objects.filter(pk=batch_id).exists()
            for model in (Item, BatchEvent, Chunk, BatchError):
                assert not model.objects.filter(batch_id=batch_id).exists(), model

    @invariant()
    def batches_are_consistent(self):
        for batch_id in self.live:
            self._check_batch(Batch.objects.get(pk=batch_id), self.tracked[batch_id])

    def _check_batch(self, batch: Batch, tracked: Tracked) -> None:
        items = list(
            Item.objects.filter(batch=batch)
            .order_by("index")
            .values("index", "status", "payload", "result", "error_code", "output_files")
        )
        counted = recount(batch)
        # Counters equal a recount, and every item the machine added is there, in order.
        assert batch.counts() == counted, (batch.status, batch.counts(), counted)
        assert batch.total_items == len(items) == len(tracked.payloads)
        assert [row["index"] for row in items] == list(range(len(items)))
        assert [row["payload"] for row in items] == tracked.payloads
        assert 0 <= batch.progress <= 1
        # Options are fixed at creation.
        stored = {"stop_on_error": False, "max_failures": None, "atomic": False, **tracked.options}
        assert stored == {name: getattr(batch, name) for name in stored}

        item_statuses = {row["status"] for row in items}
        chunk_rows = list(
            Chunk.objects.filter(batch=batch).values_list("status", "start_index", "end_index")
        )
        unfinished_chunks = [c for c in chunk_rows if c[0] != Chunk.Status.DONE]
        unfinished_items = {Item.Status.PENDING, Item.Status.QUEUED, Item.Status.RUNNING}

        if batch.status == S.CREATED:
            assert not items
        if batch.status == S.OPEN:
            assert items
            assert item_statuses == {Item.Status.PENDING}
        if batch.status in PRE_COMMIT:
            assert not chunk_rows
            assert batch.committed_at is None
        if batch.status in Batch.ACTIVE:
            assert Item.Status.PENDING not in item_statuses
            # No item is lost: whatever has not ended lies in a chunk a worker can still run,
            # and an item marked running lies in a chunk a worker claimed.
            for row in items:
                if row["status"] == Item.Status.QUEUED:
                    holders = {Chunk.Status.QUEUED, Chunk.Status.RUNNING}
                elif row["status"] == Item.Status.RUNNING:
                    holders = {Chunk.Status.RUNNING}
                else:
                    continue
                assert any(
                    start <= row["index"] < end and status in holders
                    for status, start, end in chunk_rows
                ), (batch.status, row["index"], row["status"], chunk_rows)
        else:
            assert not unfinished_chunks, (batch.status, chunk_rows)
        if batch.status != S.CANCELLING:
            assert batch.ending == ""
        if batch.is_terminal:
            assert not item_statuses & unfinished_items, (batch.status, item_statuses)
            assert not unfinished_chunks
            assert batch.finished_at is not None
        else:
            assert batch.finished_at is None

        # Outcomes follow the payloads: echo fails exactly the items that ask for it.
        for row in items:
            if row["status"] == Item.Status.SUCCEEDED:
                assert not row["payload"].get("fail")
                assert row["result"] == row["payload"]
            elif row["status"] == Item.Status.FAILED:
                assert row["result"] is None
                # An item in flight when its chunk's workers kept dying fails worker_lost.
                allowed = (
                    {"echo_failed", "worker_lost"}
                    if row["payload"].get("fail")
                    else {"worker_lost"}
                )
                assert row["error_code"] in allowed, row
            elif row["status"] != Item.Status.RUNNING:
                assert row["result"] is None
                assert row["output_files"] == []

        # Failure policies. An atomic batch publishes all of its results or none.
        if batch.atomic and batch.is_terminal and batch.status != S.FINISHED:
            assert batch.succeeded_items == 0, batch.status
        if batch.atomic and batch.status == S.FINISHED:
            assert item_statuses <= {Item.Status.SUCCEEDED}, item_statuses
        if batch.status == S.FINISHED:
            if batch.stop_on_error:
                assert batch.failed_items == 0
            if batch.max_failures is not None:
                assert batch.failed_items <= batch.max_failures
        if batch.status == S.STOPPED:
            assert not batch.atomic
            assert (batch.stop_on_error and batch.failed_items > 0) or (
                batch.max_failures is not None and batch.failed_items > batch.max_failures
            ), batch.counts()
        if batch.status == S.FAILED:
            assert batch.atomic, batch.counts()
            assert batch.failed_items > 0, batch.counts()
        if batch.status == S.EXPIRED or batch.ending == S.EXPIRED:
            # Only a passed deadline, or the TTL of a batch never committed, expires a batch.
            ttl = timedelta(seconds=django_settings.BATCHSITE_OPEN_BATCH_TTL)
            assert (batch.deadline is not None and batch.deadline < timezone.now()) or (
                batch.committed_at is None and batch.created_at < timezone.now() - ttl
            )

        self._check_one_ending_per_run(batch)

    @staticmethod
    def _check_one_ending_per_run(batch: Batch) -> None:
        """Every run (commit or rerun) ends with exactly one terminal event, the last one only
        if the batch has ended; before the first commit a batch can end at most once."""
        events = list(
            BatchEvent.objects.filter(batch=batch).order_by("pk").values_list("kind", flat=True)
        )
        segments: list[list[str]] = [[]]
        started: list[int] = [0]
        for kind in events:
            if kind in ("committed", "rerun"):
                segments.append([])
                started.append(0)
            elif kind in Batch.TERMINAL:
                segments[-1].append(kind)
            elif kind == "started":
                started[-1] += 1
        assert started[0] == 0, events
        assert all(count <= 1 for count in started), events
        starts = [kind for kind in events if kind in ("committed", "rerun")]
        assert starts.count("committed") <= 1
        if starts and starts[0] == "committed":
            assert segments[0] == [], events
        # A rerun starts only after the previous run (or a pre-commit ending) ended once.
        for ended in segments[1:-1] if starts and starts[0] == "committed" else segments[:-1]:
            assert len(ended) == 1, events
        assert len(segments[-1]) == (1 if batch.is_terminal else 0), events
        if batch.is_terminal:
            assert segments[-1] == [batch.status], events


@pytest.mark.slow
def test_batch_lifecycle__random_transitions_keep_every_invariant(db, settings, monkeypatch):
    # Slices end by size, never by the clock; two dead workers exhaust a chunk.
    settings.BATCHSITE_SLICE_SECONDS = 3600
    settings.BATCHSITE_CHUNK_MAX_ATTEMPTS = 2
    # Tiny chunks and slices, so a few items make batches of several chunks and slices.
    monkeypatch.setattr(Echo, "chunk_size", 3)
    monkeypatch.setattr(Echo, "slice_size", 2)

    def enqueue_nowhere(chunk_ids):
        # Chunks run only when a worker rule says so; the broker just records the hand-off.
        Chunk.objects.filter(pk__in=chunk_ids).update(enqueued_at=timezone.now())

    monkeypatch.setattr(planning, "chunks_enqueue", enqueue_nowhere)

    run_state_machine_as_test(
        BatchMachine,
        settings=hypothesis_settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
