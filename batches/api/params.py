"""Read a request's query parameters, refusing a bad value as InvalidInput that names it.

form_errors does the same for the parameters a django-filter FilterSet has checked.
"""

from __future__ import annotations

from batches.exceptions import InvalidInput


def choice_param(request, name: str, choices: list[str], *, default: str) -> str:
    """Return query parameter `name`, or `default`; refuse a value not among `choices`."""
    value = request.query_params.get(name) or default
    if value not in choices:
        message = f"must be one of {', '.join(choices)}"
        raise InvalidInput.for_field(name, message)
    return value


def int_param(request, name: str, default: int, *, minimum: int, maximum: int | None = None):
    """Return query parameter `name` as an integer within bounds, or `default` if absent."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        message = f"must be an integer of at least {minimum}{bound}"
        raise InvalidInput.for_field(name, message)
    return value


def form_errors(errors) -> list[dict[str, str]]:
    """Turn a form's errors into the problem document's `errors` entries, one per message."""
    return [
        {"field": field, "message": str(message)}
        for field, messages in errors.items()
        for message in messages
    ]
