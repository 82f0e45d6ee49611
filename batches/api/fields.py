"""Strict input: fields that take only the JSON type they name, and a serializer base that
refuses fields it does not know.

A client that sends "5" for a number or "yes" for a boolean is told so, rather than having
its value coerced; JSON text is checked for depth before it is parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batches.ingest.items import storable_problem
from batches.jsondepth import json_depth_check


class StrictBooleanField(serializers.BooleanField):
    """Accept only JSON true/false, not "yes" or 1."""

    def to_internal_value(self, data):
        """Refuse anything but a boolean."""
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """Accept only JSON integers, not "5", 5.5 or true."""

    def to_internal_value(self, data):
        """Refuse anything but an integer."""
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Accept only JSON strings, not numbers."""

    def to_internal_value(self, data):
        """Refuse anything but a string."""
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """Accept only a UUID written as a JSON string, not an integer."""

    def to_internal_value(self, data):
        """Refuse anything but a string."""
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class DepthLimitedJSONField(serializers.JSONField):
    """A JSONField that refuses JSON text (binary=True, or a form's field) nested deeper than
    BATCHSITE_JSON_MAX_DEPTH before parsing it, as the JSON body parser does."""

    def to_internal_value(self, data):
        """Refuse too deep JSON text (JsonTooDeep), then parse or check it as JSONField does."""
        text = self.binary or getattr(data, "is_json_string", False)
        if text and isinstance(data, str | bytes):
            json_depth_check(data, field=self.field_name or "body")
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(DepthLimitedJSONField):
    """Accept only a JSON object (with binary=True, also given as a JSON string)."""

    def to_internal_value(self, data):
        """Refuse anything but an object, and text no database can store."""
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        problem = _json_storable_problem(value)
        if problem:
            raise serializers.ValidationError(f"A string in it {problem}.")
        return value


def _json_storable_problem(value) -> str:
    """Say why a database could not store some text in this JSON value (NUL...), or ""."""
    if isinstance(value, str):
        return storable_problem(value)
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        return next((problem for part in value if (problem := _json_storable_problem(part))), "")
    return ""


class JobTypeNameField(StrictCharField):
    """The name of a registered job type; the schema lists the names (batches.api.schema)."""


class StrictSerializer(serializers.Serializer):
    """A serializer that refuses fields it does not know."""

    def to_internal_value(self, data):
        """Validate the known fields and refuse unknown ones, reporting both at once."""
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, Mapping) else []
        errors: dict[str, Any] = {name: ["Unknown field."] for name in unknown}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        return value
