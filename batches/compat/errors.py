"""Answer a dialect's errors in the dialect's own body, never as a problem document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_framework.response import Response

from batches.api.problems import answerable, refusal_headers

# The error `answerable` settled on -> (HTTP status, the dialect's body).
ErrorBody = Callable[[Exception], tuple[int, Any]]
ExceptionHandler = Callable[[Exception, dict], Response | None]


def dialect_exception_handler(
    error_body: ErrorBody, *, known: tuple[type[Exception], ...] = ()
) -> ExceptionHandler:
    """Return a DRF exception handler that answers every error with `error_body`'s body.

    Every dialect shares what happens around the body: `answerable` turns a crash into a
    bare 500 (or, with DEBUG on, leaves it to Django), and a 401 or 429 keeps its
    WWW-Authenticate and Retry-After headers. `known` are the dialect's own refusals.
    """

    def exception_handler(exc: Exception, context: dict) -> Response | None:
        error = answerable(exc, context, known=known)
        if error is None:
            return None
        status_code, body = error_body(error)
        return Response(body, status=status_code, headers=refusal_headers(error))

    return exception_handler
