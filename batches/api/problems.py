"""Turn every API error into an RFC 9457 problem document with a machine-readable `code`."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from batches.exceptions import DomainError, InvalidInput, TooLarge
from batchsite.requestid import request_id_get, request_id_uri

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


class ServerError(exceptions.APIException):
    """A crash as the client hears of it: a bare 500, nothing of the exception itself."""

    status_code = 500
    default_detail = "The server failed to handle this request."
    default_code = "server_error"


# DRF exception class -> (code, title); the first match in this order wins.
API_EXCEPTION_CODES: list[tuple[type[exceptions.APIException], str, str]] = [
    (exceptions.ValidationError, "invalid", "Invalid request"),
    (exceptions.ParseError, "invalid", "Malformed request body"),
    (exceptions.NotAuthenticated, "not_authenticated", "Authentication required"),
    (exceptions.AuthenticationFailed, "not_authenticated", "Authentication failed"),
    (exceptions.PermissionDenied, "permission_denied", "Permission denied"),
    (exceptions.NotFound, "not_found", "Not found"),
    (exceptions.MethodNotAllowed, "method_not_allowed", "Method not allowed"),
    (exceptions.NotAcceptable, "not_acceptable", "Not acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type", "Unsupported media type"),
    (exceptions.Throttled, "throttled", "Too many requests"),
    (ServerError, "server_error", "Server error"),
]


def problem_type(code: str) -> str:
    """Return the problem type URI for a code."""
    return f"urn:batchsite:problem:{code}"


def problem_body(*, status_code: int, code: str, title: str, detail: str, **extra: Any) -> dict:
    """Build a problem document."""
    return {
        "type": problem_type(code),
        "title": title,
        "status": status_code,
        "detail": detail,
        "code": code,
        **extra,
    }


def flatten_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested error detail into [{"field": "a.b", "message": "..."}]."""
    if isinstance(detail, dict):
        found = []
        for key, value in detail.items():
            name = prefix if key in ("non_field_errors",) else f"{prefix}.{key}" if prefix else key
            found.extend(flatten_errors(value, str(name)))
        return found
    if isinstance(detail, list):
        if all(not isinstance(value, dict | list) for value in detail):
            return [{"field": prefix or "body", "message": str(value)} for value in detail]
        found = []
        for position, value in enumerate(detail):
            found.extend(
                flatten_errors(value, f"{prefix}[{position}]" if prefix else str(position))
            )
        return found
    return [{"field": prefix or "body", "message": str(detail)}]


def refusal_headers(exc: Exception) -> dict[str, str]:
    """Return the WWW-Authenticate and Retry-After headers an error asks to be sent with it."""
    headers = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(int(wait))
    return headers


def domain_error_line(exc: DomainError) -> str:
    """Say on one line what a domain error refuses, with the first details it carries.

    For the dialects, whose error bodies are one string rather than a problem document.
    """
    message = exc.message
    details = []
    for error in getattr(exc, "errors", [])[:5]:
        if error["message"] in message:
            continue  # a whole-file problem repeated as its only detail
        where = [error[name] for name in ("external_id", "field") if error.get(name)]
        details.append(": ".join([*where, error["message"]]))
    return f"{message}: {'; '.join(details)}" if details else message


def request_refusal(exc: SuspiciousOperation) -> DomainError:
    """Translate Django's refusal of a request body (too big, too many fields) for the API."""
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return TooLarge(f"the request body is over the limit of {limit} bytes")
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return TooLarge("the request has too many fields or files")
    message = "the request was refused as malformed"
    return InvalidInput.for_field("body", message, detail=message)


def answerable(
    exc: Exception, context: dict, *, known: tuple[type[Exception], ...] = ()
) -> Exception | None:
    """Return the error an exception handler answers in its own shape for `exc`, or None.

    Every handler (the API's and each dialect's) starts here. A request body Django
    refused (too big, too many fields) becomes the domain error it means, and Django's
    PermissionDenied DRF's: left to Django they would be HTML pages. DomainError,
    APIException, Http404 and the handler's `known` exceptions are answered as they are.
    Anything else is a crash: logged with its traceback and answered as ServerError, so no
    message, stack trace or SQL of it reaches the client, and no surface answers Django's
    HTML page. With DEBUG on a crash gives None, which leaves it to Django's debug page.
    """
    if isinstance(exc, SuspiciousOperation):
        logger.warning("Refused request: %s", exc)
        return request_refusal(exc)
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, (DomainError, exceptions.APIException, Http404, *known)):
        return exc
    if settings.DEBUG:
        return None
    view = context.get("view")
    name = type(view).__name__ if view is not None else "an API view"
    logger.exception("Unhandled error in %s", name, exc_info=exc)
    return ServerError()


def occurrence(request: Any) -> dict[str, str]:
    """Return the members that name this occurrence of a problem: `instance`, `request_id`.

    The request id is the one RequestIdMiddleware gave the request (and sends back in
    X-Request-ID), so a client's report of a problem finds its server log lines.
    """
    request_id = request_id_get()
    if not request_id:
        return {}
    path = getattr(request, "path", "") or "/"
    return {"instance": request_id_uri(request_id, path), "request_id": request_id}


def problem_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Answer every error with a problem document (see `answerable` for crashes)."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    error = answerable(exc, context)
    if error is None:
        return None
    exc = error
    headers: dict[str, str] = {}
    if isinstance(exc, DomainError):
        body = problem_body(
            status_code=exc.status_code,
            code=exc.code,
            title=exc.title,
            detail=exc.message,
            **exc.extra,
        )
    elif isinstance(exc, exceptions.APIException):
        code, title = next(
            ((code, title) for cls, code, title in API_EXCEPTION_CODES if isinstance(exc, cls)),
            ("error", "Error"),
        )
        extra: dict[str, Any] = {}
        if isinstance(exc, exceptions.ValidationError):
            extra["errors"] = flatten_errors(exc.detail)
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in extra["errors"][:5])
        else:
            detail = str(exc.detail)
        if isinstance(exc, exceptions.ParseError):
            extra["errors"] = [{"field": "body", "message": detail}]
        body = problem_body(
            status_code=exc.status_code, code=code, title=title, detail=detail, **extra
        )
        headers.update(refusal_headers(exc))

    request = context.get("request")
    body.update(occurrence(request))
    set_rollback()
    response = Response(body, status=body["status"], headers=headers)
    renderer = getattr(request, "accepted_renderer", None)
    if renderer is None or getattr(renderer, "format", "json") == "json":
        response.content_type = PROBLEM_CONTENT_TYPE
    return response
