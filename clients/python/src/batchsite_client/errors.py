"""Typed errors: every problem document the API answers becomes one of these exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

PROBLEM_CONTENT_TYPE = "application/problem+json"


class BatchsiteError(Exception):
    """An error of the batchsite client; for an API refusal, its problem document.

    `status` is the HTTP status (None when no answer came), `code` the API's
    machine-readable code (`not_found`, `batch_finished`, ...), `detail` what went wrong,
    `errors` the field or line errors of a 400, `instance` the problem's instance (the
    request id when the server sends one), and `problem` the whole document.
    `items_added` is set by `Client.add_items`: the items its earlier requests added.
    """

    items_added: int | None = None

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str = "error",
        title: str = "",
        errors: list[dict[str, Any]] | None = None,
        instance: str | None = None,
        problem: dict[str, Any] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.title = title
        self.errors: list[dict[str, Any]] = errors or []
        self.instance = instance
        self.problem: dict[str, Any] = problem or {}
        self.response = response

    def __str__(self) -> str:
        """Say the status and code before the detail, on one line."""
        where = f"{self.status} {self.code}" if self.status else self.code
        return f"{where}: {self.detail}"


class InvalidRequest(BatchsiteError):
    """400: the request is malformed or breaks a rule; `errors` says where."""


class AuthenticationFailed(BatchsiteError):
    """401: no API key, or one the server does not know (or that was revoked)."""


class PermissionDenied(BatchsiteError):
    """403: the key may not do this."""


class NotFound(BatchsiteError):
    """404: no such batch or item for this key's account (or it was deleted)."""


class Conflict(BatchsiteError):
    """409: the batch's state does not allow this (`code` says which rule)."""


class BatchExists(Conflict):
    """409 `batch_exists`: the batch id is taken by another account."""


class BatchEmpty(Conflict):
    """409 `batch_empty`: a batch without items cannot be committed."""


class BatchAlreadyCommitted(Conflict):
    """409 `batch_already_committed`."""


class BatchNotOpen(Conflict):
    """409 `batch_not_open`: the batch takes no more items."""


class BatchFinished(Conflict):
    """409 `batch_finished`: the batch has ended."""


class BatchNotFinished(Conflict):
    """409 `batch_not_finished`: the batch has not ended yet (a rerun, a package)."""


class TooLarge(BatchsiteError):
    """413: the request body or the number of items is over the server's limit."""


class UnsupportedMediaType(BatchsiteError):
    """415: the server cannot read a body of this content type."""


class Throttled(BatchsiteError):
    """429: too many requests, still refused after the client's retries."""


class ServerError(BatchsiteError):
    """5xx: the server failed (503: unavailable, still after the client's retries)."""


class ConnectionFailed(BatchsiteError):
    """No answer: the connection failed or timed out (after retries, when they were safe)."""


class WaitTimeout(BatchsiteError, TimeoutError):
    """`Client.wait` gave up before the batch ended; `batch` is the last state seen."""

    def __init__(self, detail: str, *, batch: Mapping[str, Any]) -> None:
        super().__init__(detail, code="wait_timeout")
        self.batch = batch


BY_CODE: dict[str, type[BatchsiteError]] = {
    "batch_exists": BatchExists,
    "batch_empty": BatchEmpty,
    "batch_already_committed": BatchAlreadyCommitted,
    "batch_not_open": BatchNotOpen,
    "batch_finished": BatchFinished,
    "batch_not_finished": BatchNotFinished,
}

BY_STATUS: dict[int, type[BatchsiteError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedMediaType,
    429: Throttled,
}


def error_class(status: int, code: str) -> type[BatchsiteError]:
    """Return the exception class for an error answer's status and code."""
    if code in BY_CODE:
        return BY_CODE[code]
    if status in BY_STATUS:
        return BY_STATUS[status]
    return ServerError if status >= 500 else BatchsiteError


def error_from_response(response: httpx.Response) -> BatchsiteError:
    """Turn an error answer (read in full) into its typed exception.

    A problem document gives every field; any other body (a proxy's HTML page) gives a
    code of `http_<status>` and the start of the body as the detail.
    """
    problem = _problem(response)
    status = response.status_code
    if problem is None:
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return error_class(status, "")(
            text, status=status, code=f"http_{status}", response=response
        )
    code = str(problem.get("code") or f"http_{status}")
    errors = problem.get("errors")
    return error_class(status, code)(
        str(problem.get("detail") or problem.get("title") or response.reason_phrase),
        status=status,
        code=code,
        title=str(problem.get("title") or ""),
        errors=errors if isinstance(errors, list) else [],
        instance=problem.get("instance") if isinstance(problem.get("instance"), str) else None,
        problem=problem,
        response=response,
    )


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    if content_type not in (PROBLEM_CONTENT_TYPE, "application/json"):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
