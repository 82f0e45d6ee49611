"""Domain errors: each has an HTTP status and a machine-readable code for problem documents."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the domain refuses; the API turns it into an RFC 9457 problem document."""

    status_code = 400
    default_code = "invalid"
    title = "Invalid request"

    def __init__(self, message: str, *, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.extra: dict[str, Any] = extra or {}


class InvalidInput(DomainError):
    """The input is malformed or breaks a rule; `errors` says where."""

    def __init__(self, message: str, *, errors: list[dict] | None = None):
        super().__init__(message, extra={"errors": errors} if errors else None)
        self.errors = errors or []

    @classmethod
    def for_field(cls, field: str, message: str, *, detail: str | None = None) -> InvalidInput:
        """Refuse one field: `message` says what is wrong with it.

        The error's own message is `detail` when given, else "<field> <message>".
        """
        return cls(
            f"{field} {message}" if detail is None else detail,
            errors=[{"field": field, "message": message}],
        )


class JsonTooDeep(DomainError):
    """JSON nested deeper than BATCHSITE_JSON_MAX_DEPTH, refused before it was parsed."""

    default_code = "json_too_deep"
    title = "JSON nested too deeply"

    def __init__(self, *, field: str, limit: int):
        what = "the JSON body" if field == "body" else f"the JSON of {field}"
        message = f"nests more than {limit} levels deep"
        self.errors = [{"field": field, "message": message}]
        super().__init__(f"{what} {message}", extra={"errors": self.errors})


class NotFound(DomainError):
    status_code = 404
    default_code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    status_code = 409
    default_code = "conflict"
    title = "Conflict with the batch's state"


class BatchExists(Conflict):
    default_code = "batch_exists"
    title = "Batch id already taken"


class BatchEmpty(Conflict):
    default_code = "batch_empty"
    title = "Batch has no items"


class BatchAlreadyCommitted(Conflict):
    default_code = "batch_already_committed"
    title = "Batch already committed"


class BatchNotOpen(Conflict):
    default_code = "batch_not_open"
    title = "Batch does not accept items"


class BatchNotCommitted(Conflict):
    default_code = "batch_not_committed"
    title = "Batch has not been committed"


class BatchFinished(Conflict):
    default_code = "batch_finished"
    title = "Batch has already ended"


class BatchNotFinished(Conflict):
    default_code = "batch_not_finished"
    title = "Batch has not ended yet"


class JobTypeNotReady(Conflict):
    """Items of a job type that cannot run on this server yet; the message says how to fix it."""

    default_code = "job_type_not_ready"
    title = "Job type not ready"


class ResultsHidden(Conflict):
    default_code = "results_hidden"
    title = "Results are hidden"


class TooLarge(DomainError):
    status_code = 413
    default_code = "too_large"
    title = "Too large"


class UnsupportedMediaType(DomainError):
    status_code = 415
    default_code = "unsupported_media_type"
    title = "Unsupported media type"


class AccountRequired(DomainError):
    """The request acts for an account (an API key's), and this caller has none."""

    status_code = 403
    default_code = "account_required"
    title = "Only for an account's API key"
