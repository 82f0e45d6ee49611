"""Format log records as one JSON object per line, for log shippers.

Chosen with `BATCHSITE_LOG_FORMAT=json`. Engine log lines that concern a batch, an item or
a chunk pass them as `extra={"batch": ..., "item": ..., "chunk": ...}`; those land in the
object as fields of their own, so logs can be searched by batch without parsing messages.

This module is imported by logging configuration before Django's apps are ready: it must
not import models.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# Attributes a record may carry through `extra=` that are copied into the JSON object.
EXTRA_FIELDS = ("batch", "item", "chunk")


class JsonFormatter(logging.Formatter):
    """Render a record as a JSON object: time, level, logger, message, and known extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: ids are often UUIDs; a log line must never fail to serialize.
        return json.dumps(entry, default=str, ensure_ascii=False)
