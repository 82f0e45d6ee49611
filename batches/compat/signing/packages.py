"""What the signing dialect makes of a package: which job a process runs, and validation pairs.

A process (the `processId` of CreateBatch) names a job type through
BATCHSITE_SIGNING_PROCESSES. A package for validation holds each document `NAME.EXT` beside
its detached signature `NAME.EXT.p7s`, as a signed package does; each pair becomes one
`document.verify` item: the document as its file, the signature in its payload.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

from django.conf import settings

from batches.ingest.formats import Record
from batches.ingest.items import ItemProblem
from jobs.signing import SIGNATURE_SUFFIX, DocumentVerify


def process_job_type(process_id: int) -> str | None:
    """Return the job type a process runs, or None for a process that is not configured."""
    return settings.BATCHSITE_SIGNING_PROCESSES.get(process_id)


def processes_described() -> str:
    """Name every configured process and its job type, for error messages."""
    return ", ".join(
        f"{process_id} ({job_type})"
        for process_id, job_type in sorted(settings.BATCHSITE_SIGNING_PROCESSES.items())
    )


def pairs_signatures(job_type: str) -> bool:
    """Say whether a package for this job type is read as documents with their signatures."""
    return job_type == DocumentVerify.name


def signature_pairs(records: Iterator[Record]) -> Iterator[Record]:
    """Fold each member `NAME.p7s` into the record of member `NAME`, as its payload's signature.

    The members are already extracted files and their records are small, so all are read
    first: a signature may come before or after its document. A document without a
    signature, or a signature without its document, stays an item of its own (and fails
    validation saying so). A signature too big for a payload refuses its document.
    """
    held = list(records)
    files = {record["external_id"]: record for _, record in held if isinstance(record, dict)}
    paired = {
        name.removesuffix(SIGNATURE_SUFFIX)
        for name in files
        if name.endswith(SIGNATURE_SUFFIX) and name.removesuffix(SIGNATURE_SUFFIX) in files
    }
    limit = settings.BATCHSITE_MAX_PAYLOAD_BYTES
    for index, record in held:
        if not isinstance(record, dict):
            yield index, record
            continue
        name = record["external_id"]
        if name.endswith(SIGNATURE_SUFFIX) and name.removesuffix(SIGNATURE_SUFFIX) in paired:
            continue
        if name in paired:
            signature = files[f"{name}{SIGNATURE_SUFFIX}"]["_file"]
            size = signature.stat().st_size
            if size * 4 // 3 > limit:
                message = f"is {size} bytes; a signature may be at most {limit * 3 // 4}"
                record["_file"].unlink(missing_ok=True)
                problem = {f"{name}{SIGNATURE_SUFFIX}": message}
                yield index, ItemProblem(index=index, errors=problem, external_id=name)
                continue
            encoded = base64.b64encode(signature.read_bytes()).decode("ascii")
            record = {**record, "payload": {**record["payload"], "signature": encoded}}
        yield index, record
    for name in paired:  # their bytes travel in the documents' payloads
        files[f"{name}{SIGNATURE_SUFFIX}"]["_file"].unlink(missing_ok=True)
