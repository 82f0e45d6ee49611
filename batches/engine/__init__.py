"""The worker side: plan chunks, claim them under a lease, run items, finalize batches once.

`planning` cuts a batch into chunks and queues them; `claim` hands a chunk to one worker
under a lease; `runner` runs it slice by slice, and `attempts` each of its items;
`finalize` winds a batch down and ends it once; `sweep` recovers what workers lost;
`shutdown` lets a stopping cluster's workers give their chunks back at once.
`locks`, `nudges` and `superseding` are what they share. Callers use the names below
(`engine.chunk_process(...)`); a test that replaces a function patches the module that
defines it.
"""

from batches.engine.attempts import ItemRunner, Outcome
from batches.engine.claim import (
    LeaseKeeper,
    chunk_abandon,
    chunk_claim,
    chunk_give_back,
    chunk_hand_back,
    chunk_hold,
    chunk_pass_on,
    chunks_release,
    lease_renew,
    lease_seconds,
    worker_name,
)
from batches.engine.finalize import (
    DEFERRED_RESULT,
    SENT_RESULT,
    batch_finalize,
    batch_finalize_if_done,
    batch_wind_down,
    counters_verify,
    deferred_send,
    failure_policy_apply,
)
from batches.engine.planning import (
    CHUNK_TASK,
    INGEST_TASK,
    chunks_enqueue,
    chunks_enqueue_on_commit,
    chunks_plan,
    ingest_enqueue,
    type_sizes,
)
from batches.engine.runner import (
    ChunkRunner,
    chunk_process,
    chunks_process,
    rate_window_changes,
)

__all__ = [
    "CHUNK_TASK",
    "DEFERRED_RESULT",
    "INGEST_TASK",
    "SENT_RESULT",
    "ChunkRunner",
    "ItemRunner",
    "LeaseKeeper",
    "Outcome",
    "batch_finalize",
    "batch_finalize_if_done",
    "batch_wind_down",
    "chunk_abandon",
    "chunk_claim",
    "chunk_give_back",
    "chunk_hand_back",
    "chunk_hold",
    "chunk_pass_on",
    "chunk_process",
    "chunks_enqueue",
    "chunks_enqueue_on_commit",
    "chunks_plan",
    "chunks_process",
    "chunks_release",
    "counters_verify",
    "deferred_send",
    "failure_policy_apply",
    "ingest_enqueue",
    "lease_renew",
    "lease_seconds",
    "rate_window_changes",
    "type_sizes",
    "worker_name",
]
