"""Turn untrusted item descriptions into validated ItemSpecs, reporting each bad one by index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from batches.ingest.bulk import json_text
from jobs import get_job_type
from jobs.base import PayloadError

ITEM_FIELDS = frozenset({"external_id", "type", "key", "payload"})
MAX_TEXT = 255


@dataclass(slots=True)
class ItemSpec:
    """A validated item, ready to insert."""

    payload: Any  # a JSON value its job type accepted: an object unless the type says so
    type: str
    external_id: str = ""
    key: str = ""
    payload_json: str = ""
    input_file: str = ""


@dataclass(slots=True)
class ItemProblem:
    """Why the item at `index` of the input was refused."""

    index: int
    errors: dict[str, str]
    external_id: str = ""
    code: str = "invalid"

    @property
    def message(self) -> str:
        """Return every error of the item on one line."""
        return "; ".join(f"{field}: {text}" for field, text in self.errors.items())

    def as_dict(self) -> dict[str, Any]:
        """Return the item's problem as one line of an upload's report: every field at once."""
        report: dict[str, Any] = {"index": self.index, "code": self.code, "message": self.message}
        if self.external_id:
            report["external_id"] = self.external_id
        report["fields"] = self.errors
        return report

    def as_errors(self) -> list[dict[str, Any]]:
        """Return the item's problems as a problem document's `errors`: one per field."""
        reports = []
        for field, message in self.errors.items():
            report: dict[str, Any] = {"index": self.index, "field": field}
            if self.external_id:
                report["external_id"] = self.external_id
            reports.append({**report, "code": self.code, "message": message})
        return reports


def _text(value: Any, field: str, errors: dict[str, str]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[field] = "must be a string"
        return ""
    if len(value) > MAX_TEXT:
        errors[field] = f"must be at most {MAX_TEXT} characters"
        return ""
    problem = storable_problem(value)
    if problem:
        errors[field] = problem
        return ""
    return value


def storable_problem(text: str) -> str:
    """Say why a database could not store this text (lone surrogates, NUL), or ""."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains text that is not valid Unicode"
    return ""


def _payload_json_problem(payload_json: str) -> str:
    """Say why a payload's JSON cannot be stored (or is too big), or return ""."""
    # NUL escapes and lone surrogates pass json but not PostgreSQL's jsonb.
    try:
        size = len(payload_json.encode("utf-8"))
    except UnicodeEncodeError:
        return "contains text that is not valid Unicode"
    if "\\u0000" in payload_json:
        return "contains a NUL character"
    limit = settings.BATCHSITE_MAX_PAYLOAD_BYTES
    if size > limit:
        return f"is {size} bytes; the limit is {limit}"
    return ""


def item_parse(obj: Any, *, index: int, default_type: str) -> ItemSpec | ItemProblem:
    """Validate one item object; return its spec, or the problem that refuses it."""
    if not isinstance(obj, dict):
        return ItemProblem(index, {"item": "must be a JSON object"})
    errors: dict[str, str] = {}
    if not ITEM_FIELDS.issuperset(obj):
        errors["item"] = f"unknown field(s): {', '.join(sorted(set(obj) - ITEM_FIELDS))}"
    external_id = _text(obj.get("external_id"), "external_id", errors)
    key = _text(obj.get("key"), "key", errors)
    type_name = obj.get("type")
    if type_name is None or type_name == "":
        type_name = default_type
    job_type = get_job_type(type_name) if isinstance(type_name, str) else None
    if job_type is None:
        errors["type"] = f"unknown job type {type_name!r}"
    if "payload" not in obj:
        errors["payload"] = "is required"
    payload = obj.get("payload")
    payload_json = ""
    if "payload" in obj and job_type is not None:
        try:
            job_type.payload_check(payload)
            payload_json = json_text(payload)
        except PayloadError as exc:
            errors.update(exc.errors)
        except (TypeError, ValueError) as exc:
            errors["payload"] = f"is not JSON: {exc}"
        else:
            problem = _payload_json_problem(payload_json)
            if problem:
                errors["payload"] = problem
    if errors:
        return ItemProblem(index, errors, external_id)
    return ItemSpec(
        payload=payload, type=type_name, external_id=external_id, key=key, payload_json=payload_json
    )
