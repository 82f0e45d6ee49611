"""What the end-to-end tests share: creating a batch, waiting for its end, reading item logs."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

from batches.models import Batch
from tests.conftest import wait_for


def wait_terminal(batch_id, cluster, timeout: float = 120) -> Batch:
    """Wait for the batch to end; print the cluster's output if it does not."""

    def ended():
        batch = Batch.objects.get(pk=batch_id)
        return batch if batch.is_terminal else None

    try:
        return wait_for(ended, timeout=timeout)
    except AssertionError:
        print(cluster.output()[-5000:])
        raise


def read_log(path: Path) -> dict[int, list[tuple[float, float, int]]]:
    """Return every logged execution by item number."""
    runs: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        n, start, end, pid = line.split()
        runs[int(n)].append((float(start), float(end), int(pid)))
    return runs


def assert_never_concurrent(runs: dict[int, list[tuple[float, float, int]]]) -> None:
    """Fail if any item's logged executions overlap in time."""
    for n, executions in runs.items():
        executions.sort()
        for (_, end, _pid), (start, _, _) in itertools.pairwise(executions):
            assert start >= end, f"item {n} ran twice at once: {executions}"


def most_at_once(runs: dict[int, list[tuple[float, float, int]]]) -> int:
    """Return the largest number of item executions that overlapped in time."""
    edges = []
    for executions in runs.values():
        for start, end, _pid in executions:
            edges += [(start, 1), (end, -1)]
    level = peak = 0
    # At equal times an end comes before a start: back-to-back items do not overlap.
    for _, change in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        level += change
        peak = max(peak, level)
    return peak
