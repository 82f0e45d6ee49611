"""A bounded load driver: client threads that create, fill, commit and poll batches over HTTP.

Each client is a thread with its own httpx client and API key. It loops until the load
window ends: create a batch (with an id it chose, so a retried create never makes two),
add its items in requests of 1,000, commit, and poll until the batch ends. A batch once
started is always carried to its commit, so every batch the clients made is expected to
end. Every request's latency and status is recorded.

Server errors are retried the way a careful client would: a create is retried with the
same id; an items request that failed is reconciled against the batch's item count
before it is sent again, so a request that did land is never sent twice.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx

TERMINAL = frozenset({"finished", "stopped", "cancelled", "failed", "expired"})
# Attempts at one step (create, add, commit) before the client gives up on the batch.
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Sample:
    """One HTTP request: what it was, its status (0: no answer) and how long it took."""

    kind: str
    status: int
    seconds: float


@dataclass
class SentBatch:
    """What a client did to one batch: its id, the items it knows landed, and what went odd."""

    id: str
    client: int
    items: int = 0
    committed: bool = False
    last_status: str = ""
    problems: list[str] = field(default_factory=list)


class Recorder:
    """Collect samples and batches from every client thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.samples: list[Sample] = []
        self.batches: list[SentBatch] = []

    def sample(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def batch(self, batch: SentBatch) -> None:
        with self._lock:
            self.batches.append(batch)


class GaveUp(Exception):
    """A step failed too often, or in a way a retry cannot fix."""


class LoadClient(threading.Thread):
    """One client: batches one after another until `until` (a time.monotonic() value)."""

    def __init__(
        self,
        *,
        number: int,
        base_url: str,
        key: str,
        recorder: Recorder,
        until: float,
        poll_until: float,
        requests_per_batch: tuple[int, ...] = (2, 3, 4),
        items_per_request: int = 1000,
        poll_interval: float = 0.25,
    ):
        super().__init__(name=f"load-client-{number}", daemon=True)
        self.number = number
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.recorder = recorder
        self.until = until
        self.poll_until = poll_until
        self.requests_per_batch = requests_per_batch
        self.items_per_request = items_per_request
        self.poll_interval = poll_interval
        self.error: BaseException | None = None

    def run(self) -> None:
        """Make batches until the load window closes; never raise."""
        headers = {"Authorization": f"Api-Key {self.key}", "Content-Type": "application/json"}
        try:
            with httpx.Client(base_url=self.base_url, headers=headers, timeout=120) as http:
                self.http = http
                sequence = 0
                while time.monotonic() < self.until:
                    requests = self.requests_per_batch[sequence % len(self.requests_per_batch)]
                    self.batch_run(requests=requests)
                    sequence += 1
        except BaseException as exc:  # reported by the test, which owns the assertions
            self.error = exc

    def batch_run(self, *, requests: int) -> None:
        """Create one batch, add `requests` lists of items, commit it and wait for its end."""
        batch = SentBatch(id=str(uuid.uuid4()), client=self.number)
        self.recorder.batch(batch)
        try:
            self.batch_create(batch)
            for _ in range(requests):
                self.items_add(batch)
            self.batch_commit(batch)
            self.batch_wait(batch)
        except GaveUp as exc:
            batch.problems.append(str(exc))

    # --- steps -----------------------------------------------------------------------------

    def batch_create(self, batch: SentBatch) -> None:
        body = {"id": batch.id, "type": "echo", "label": f"load c{self.number}"}
        for _ in range(MAX_ATTEMPTS):
            response = self.request("create", "POST", "/batches/", json=body)
            if response is not None and response.status_code in (200, 201):
                return
            self.unless_retryable(response, "create")
        raise GaveUp(f"create failed {MAX_ATTEMPTS} times")

    def items_add(self, batch: SentBatch) -> None:
        start, size = batch.items, self.items_per_request
        content = json.dumps([{"payload": {"n": n}} for n in range(start, start + size)])
        for _ in range(MAX_ATTEMPTS):
            response = self.request(
                "items", "POST", f"/batches/{batch.id}/items/", content=content.encode()
            )
            if response is not None and response.status_code == 201:
                added = response.json()
                if added["added"] != size or added["first_index"] != start:
                    batch.problems.append(f"items at {start}: answer {added!r:.200}")
                batch.items = start + added["added"]
                return
            self.unless_retryable(response, "items")
            # The failed request may have landed all the same; count before sending again.
            total = self.items_total(batch)
            if total == start + size:
                batch.items = total
                return
            if total != start:
                raise GaveUp(f"items at {start}: batch holds {total}, expected {start} or more")
        raise GaveUp(f"items at {start} failed {MAX_ATTEMPTS} times")

    def batch_commit(self, batch: SentBatch) -> None:
        retried = False
        for _ in range(MAX_ATTEMPTS):
            response = self.request("commit", "POST", f"/batches/{batch.id}/commit/")
            if response is not None and response.status_code == 200:
                batch.committed = True
                return
            if retried and response is not None and response.status_code == 409:
                # The earlier attempt landed before its answer was lost.
                batch.committed = response.json().get("code") == "batch_already_committed"
                if batch.committed:
                    return
            self.unless_retryable(response, "commit")
            retried = True
        raise GaveUp(f"commit failed {MAX_ATTEMPTS} times")

    def batch_wait(self, batch: SentBatch) -> None:
        while time.monotonic() < self.poll_until:
            response = self.request("poll", "GET", f"/batches/{batch.id}/")
            if response is not None and response.status_code == 200:
                batch.last_status = response.json()["status"]
                if batch.last_status in TERMINAL:
                    return
            elif response is not None and response.status_code == 429:
                self.unless_retryable(response, "poll")
            time.sleep(self.poll_interval)

    def items_total(self, batch: SentBatch) -> int:
        for _ in range(MAX_ATTEMPTS):
            response = self.request("poll", "GET", f"/batches/{batch.id}/")
            if response is not None and response.status_code == 200:
                return response.json()["counts"]["total"]
            self.unless_retryable(response, "poll")
        raise GaveUp(f"could not read batch {batch.id}")

    # --- HTTP ------------------------------------------------------------------------------

    def request(self, kind: str, method: str, path: str, **kwargs) -> httpx.Response | None:
        """Send one request and record it; None when no answer came."""
        started = time.perf_counter()
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError:
            self.recorder.sample(Sample(kind, 0, time.perf_counter() - started))
            return None
        self.recorder.sample(Sample(kind, response.status_code, time.perf_counter() - started))
        return response

    def unless_retryable(self, response: httpx.Response | None, step: str) -> None:
        """Wait before a retry, or give up when the answer says a retry cannot help."""
        if response is None or response.status_code >= 500:
            time.sleep(0.5)
            return
        if response.status_code == 429:
            time.sleep(float(response.headers.get("Retry-After") or 1))
            return
        raise GaveUp(f"{step}: {response.status_code} {response.text[:300]}")


def run_clients(
    *, base_url: str, keys: list[str], seconds: float, poll_grace: float, recorder: Recorder
) -> list[LoadClient]:
    """Start one client per key; return them running."""
    now = time.monotonic()
    clients = [
        LoadClient(
            number=number,
            base_url=base_url,
            key=key,
            recorder=recorder,
            until=now + seconds,
            poll_until=now + seconds + poll_grace,
        )
        for number, key in enumerate(keys)
    ]
    for client in clients:
        client.start()
    return clients


def percentile(values: list[float], fraction: float) -> float:
    """Return the `fraction` quantile of `values` (nearest rank), 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def request_figures(samples: list[Sample], seconds: float) -> dict:
    """Summarize requests: rate, latency quantiles, status classes, overall and per kind."""

    def figures(group: list[Sample]) -> dict:
        latencies = [s.seconds for s in group]
        return {
            "requests": len(group),
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
            "5xx": sum(s.status >= 500 for s in group),
            "429": sum(s.status == 429 for s in group),
            "no_answer": sum(s.status == 0 for s in group),
        }

    kinds = sorted({s.kind for s in samples})
    return {
        "seconds": seconds,
        "requests_per_s": len(samples) / seconds if seconds else 0.0,
        **figures(samples),
        "by_kind": {kind: figures([s for s in samples if s.kind == kind]) for kind in kinds},
    }
