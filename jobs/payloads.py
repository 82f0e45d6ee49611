"""Check payloads against their job type's JSON Schema, naming each problem by its JSON path.

A type declares its payload in `payload_schema` (JSON Schema draft 7). `payload_schema_of`
adds what every type takes (`time_limit`) and that a payload is an object; that schema is
the one `GET job-types/` serves and the one submission enforces. Two implementations read
it:

- fastjsonschema compiles it to Python once per type. It answers "valid?" in about a
  microsecond, as fast as the hand-written checks it replaced; jsonschema takes 10 to 30 µs,
  which at a million items would be most of an upload's time.
- jsonschema runs only for a payload the compiled check refused, to list every problem
  with its path (`payload.sizes[1][0]`), which the compiled check, stopping at the first,
  cannot.

A property test holds the two to the same verdict on every built-in type's schema. Formats
(`uri`, `email`) are annotations in both: what a URL or an address may be is each type's
own check (the outbound guard, the sender allow-list), which runs after the schema passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import fastjsonschema
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError, best_match

if TYPE_CHECKING:
    from jobs.base import JobType

# The payload field through which an item asks for its own time limit, in seconds.
TIME_LIMIT_FIELD = "time_limit"
ROOT = "payload"
# A problem's message quotes at most this much of the schema or value it is about.
MAX_MESSAGE = 200
# Keywords that describe a value without constraining it (see _annotations_dropped).
ANNOTATIONS = frozenset({"contentEncoding", "contentMediaType"})
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TYPE_WORDS = {
    "object": "a JSON object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def payload_schema_of(job_type: type[JobType]) -> dict[str, Any]:
    """Return the schema a payload of `job_type` must match: its own, plus `time_limit`."""
    return _schemas(job_type)[0]


# Per job type class: its full schema, the compiled check and the jsonschema validator.
_compiled: dict[type, tuple[dict[str, Any], Any, Draft7Validator]] = {}


def _schemas(job_type: type[JobType]) -> tuple[dict[str, Any], Any, Draft7Validator]:
    if job_type not in _compiled:
        _compiled[job_type] = _compile(job_type)
    return _compiled[job_type]


def _compile(job_type: type[JobType]) -> tuple[dict[str, Any], Any, Draft7Validator]:
    schema = json.loads(json.dumps(job_type.payload_schema))
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})[TIME_LIMIT_FIELD] = {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": job_type.max_time_limit,
        "description": (
            "seconds one attempt at this item may take (default "
            f"{job_type.time_limit:g}, at most {job_type.max_time_limit:g})"
        ),
    }
    compiled = fastjsonschema.compile(
        _annotations_dropped(schema), use_formats=False, use_default=False
    )
    return schema, compiled, Draft7Validator(schema)


def _annotations_dropped(schema: Any) -> Any:
    """Return `schema` without the keywords draft 7 makes annotations but fastjsonschema checks.

    `contentEncoding` and `contentMediaType` describe a string; jsonschema does not assert
    them, so neither may the compiled check (`document.verify` checks its base64 itself).
    """
    if isinstance(schema, dict):
        # The keyword's value is a string; a field of that name in `properties` is a schema.
        return {
            key: _annotations_dropped(value)
            for key, value in schema.items()
            if not (key in ANNOTATIONS and isinstance(value, str))
        }
    if isinstance(schema, list):
        return [_annotations_dropped(value) for value in schema]
    return schema


def schema_problem(job_type: type[JobType]) -> str:
    """Return why `job_type`'s payload_schema cannot be used, or "" (for the system checks)."""
    try:
        Draft7Validator.check_schema(job_type.payload_schema)
        _schemas(job_type)
    except Exception as exc:  # any library's refusal is the same finding: a bad schema
        return f"{job_type.__name__}.payload_schema is not a usable JSON Schema: {exc}"
    return ""


def payload_problems(job_type: type[JobType], payload: Any) -> dict[str, str]:
    """Return what is wrong with `payload` by JSON path (`payload.x[0]`), or {} if it fits."""
    _schema, compiled, validator = _schemas(job_type)
    try:
        compiled(payload)
    except fastjsonschema.JsonSchemaException:
        pass
    else:
        return {}
    problems: dict[str, str] = {}
    for error in validator.iter_errors(payload):
        for parts, message in _explain(error):
            problems.setdefault(json_path(parts), message)
    return dict(sorted(problems.items()))


def json_path(parts: Iterable[str | int]) -> str:
    """Return the JSON path of a value in a payload: `payload.headers["X-Id"]`, `payload.a[2]`."""
    path = ROOT
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif IDENTIFIER.fullmatch(part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path


def _explain(error: ValidationError) -> Iterator[tuple[list[str | int], str]]:
    """Yield (path, message) for one schema error, in words a client can act on."""
    parts: list[str | int] = list(error.absolute_path)
    # The stubs allow for errors not yet tied to a schema; these come from a validator.
    keyword: Any = error.validator
    value: Any = error.validator_value
    instance: Any = error.instance
    schema: Any = error.schema
    if keyword in ("oneOf", "anyOf") and error.context:
        yield from _explain_choice(error)
    elif keyword == "required":
        missing = [name for name in value if isinstance(instance, dict) and name not in instance]
        for name in missing:
            yield [*parts, name], "is required"
    elif keyword == "additionalProperties" and value is False:
        known = set(schema.get("properties", {}))
        for name in sorted(set(instance) - known):
            yield [*parts, name], "is not a field of this job type"
    elif "propertyNames" in error.relative_schema_path:
        yield [*parts, instance], "is not an allowed name here"
    elif keyword == "not" and set(value) == {"required"}:
        yield parts, f"must not have all of: {', '.join(value['required'])}"
    else:
        yield parts, _message(keyword, value, error.message)


def _explain_choice(error: ValidationError) -> Iterator[tuple[list[str | int], str]]:
    """Explain a value that fits none of several forms by the form of its own JSON type."""
    checker = Draft7Validator.TYPE_CHECKER  # knows that a bool is no integer
    branches: Any = error.validator_value
    fitting = [
        index
        for index, branch in enumerate(branches)
        if "type" in branch and checker.is_type(error.instance, branch["type"])
    ]
    if len(fitting) == 1:
        chosen = [sub for sub in error.context or () if sub.relative_schema_path[0] == fitting[0]]
        yield from _explain(best_match(chosen))
    elif not fitting and all("type" in branch for branch in branches):
        kinds = [TYPE_WORDS.get(branch["type"], str(branch["type"])) for branch in branches]
        yield list(error.absolute_path), "must be " + " or ".join(kinds)
    else:
        yield from _explain(best_match(error.context or ()))


def _message(keyword: str, value: Any, fallback: str) -> str:
    if keyword == "type":
        kinds = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(TYPE_WORDS.get(kind, str(kind)) for kind in kinds)
    if keyword in ("enum", "const"):
        choices = value if keyword == "enum" else [value]
        return _short("must be one of " + ", ".join(json.dumps(choice) for choice in choices))
    bound = f"{value:g}" if isinstance(value, float) else value
    words = {
        "minimum": f"must be at least {bound}",
        "maximum": f"must be at most {bound}",
        "exclusiveMinimum": f"must be more than {bound}",
        "exclusiveMaximum": f"must be less than {bound}",
        "minLength": "must not be empty" if value == 1 else f"must be {value} characters or more",
        "maxLength": f"must be at most {value} characters",
        "minItems": "must not be empty" if value == 1 else f"must have at least {value} items",
        "maxItems": f"must have at most {value} items",
        "uniqueItems": "must not repeat an item",
        "pattern": _short(f"must match {value}"),
    }
    return words.get(keyword, _short(fallback))


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
