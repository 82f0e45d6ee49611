"""The JobType contract: what every job type declares and how it reports failure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from jobs import payloads
from jobs.payloads import TIME_LIMIT_FIELD


class JobError(Exception):
    """An item could not be processed; `code` is machine-readable, the message is for people."""

    default_code: ClassVar[str] = "job_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class PermanentError(JobError):
    """Fail the item now: trying again would give the same answer."""

    default_code = "failed"


class TransientError(JobError):
    """Try the item again later, up to the type's `max_attempts`."""

    default_code = "transient"


class PayloadError(ValueError):
    """A payload does not fit its type; `errors` maps a field path to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{path}: {message}" for path, message in errors.items()))
        self.errors = errors


@dataclass
class JobContext:
    """What a job type may know about the item it runs, besides its payload and file."""

    attempt: int = 1
    label: str = ""
    # The name the input file came with (a ZIP member's name), when the item has a file.
    input_name: str = ""
    # Where output files go (a path; a string saves the runner making a Path per item).
    output_dir: Path | str | None = None
    # (name, path) of each output file, in the order they were asked for.
    outputs: list[tuple[str, Path]] = field(default_factory=list)

    def output_path(self, name: str) -> Path:
        """Return where to write an output file called `name`, and remember it.

        The file lands under a random name in the output folder; `name` is what it is
        called in the batch's package.
        """
        if self.output_dir is None:
            raise PermanentError("this job type cannot write output files here", code="no_output")
        if "/" in name or "\\" in name or name in ("", ".", "..") or len(name) > 200:
            raise PermanentError(f"bad output file name {name!r}", code="bad_output_name")
        directory = Path(self.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / uuid.uuid4().hex
        self.outputs.append((name, path))
        return path


class JobType:
    """Turn one payload (and optionally one file) into a result.

    Subclasses set `name` and `description`, describe their payload in `payload_schema`
    (JSON Schema draft 7: shown in `GET job-types/` and enforced at submission), add in
    `validate_payload` only what a schema cannot say, and do the work in `process`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    payload_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    accepts_file: ClassVar[bool] = False
    # Items a worker claims at once, and items it writes per transaction.
    chunk_size: ClassVar[int] = 1000
    slice_size: ClassVar[int] = 100
    max_attempts: ClassVar[int] = 3
    # Seconds before the first retry of a transient failure; doubles each time, with jitter.
    retry_backoff: ClassVar[float] = 1.0
    retry_backoff_max: ClassVar[float] = 60.0
    # Seconds one attempt at an item may take before it fails with code `timeout`. A
    # payload may set its own `time_limit`, up to `max_time_limit`. With
    # `timeouts_transient` a timed-out attempt is retried like a TransientError.
    time_limit: ClassVar[float] = 60.0
    max_time_limit: ClassVar[float] = 600.0
    timeouts_transient: ClassVar[bool] = False

    def payload_check(self, payload: Any) -> None:
        """Raise PayloadError unless `payload` fits the type's schema and its own checks.

        Submission calls this: first the schema (`payload_schema`, with the `time_limit`
        every type takes; see jobs.payloads), then `validate_payload` for what a schema
        cannot say, which so sees only payloads of the right shape.
        """
        problems = payloads.payload_problems(type(self), payload)
        if problems:
            raise PayloadError(problems)
        self.validate_payload(payload)

    def time_limit_for(self, payload: Any) -> float:
        """Return the seconds one attempt at this payload may take."""
        if isinstance(payload, dict):
            asked = payload.get(TIME_LIMIT_FIELD)
            if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
                return min(float(asked), self.max_time_limit)
        return self.time_limit

    def validate_payload(self, payload: dict[str, Any]) -> None:
        """Raise PayloadError for what `payload_schema` cannot say (the default: nothing).

        Called only with payloads that fit the schema, so a check may rely on its types.
        Name each problem by its JSON path (`jobs.payloads.json_path`).
        """

    def process(self, payload: dict[str, Any], file: IO[bytes] | None, context: JobContext) -> Any:
        """Do the work for one item and return its JSON-serializable result."""
        raise NotImplementedError

    # In an atomic batch, a type with defer_in_atomic only prepares each item (`prepare`)
    # while the batch runs, and does the irreversible part for all items at once in
    # `finalize_send`, once every item has been prepared: all or none.
    defer_in_atomic: ClassVar[bool] = False

    def prepare(self, payload: dict[str, Any]) -> Any:
        """Check that the item can be done, without doing it (defer_in_atomic types)."""
        raise NotImplementedError

    def finalize_send(self, payloads: list[dict[str, Any]]) -> int:
        """Do every prepared item at once; return how many (defer_in_atomic types)."""
        raise NotImplementedError

    def readiness(self) -> str | None:
        """Return None when items of this type can run here, else what is missing and how to fix it.

        Items of a type that is not ready are refused when they are submitted and again at
        commit, instead of every one of them failing at run time. It is asked on every
        submission, so keep it cheap; the message is shown to API clients, so name the
        command or setting that fixes it, not file paths.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """Return the public description shown by `GET job-types/`."""
        return {
            "name": self.name,
            "description": self.description,
            "payload_schema": payloads.payload_schema_of(type(self)),
            "accepts_file": self.accepts_file,
            "time_limit": self.time_limit,
            "max_time_limit": self.max_time_limit,
        }
