"""Format log records as JSON lines, keep secrets out of log lines, and build LOGGING.

JSON is chosen with `BATCHSITE_LOG_FORMAT=json`. Engine log lines that concern a batch, an
item or a chunk pass them as `extra={"batch": ..., "item": ..., "chunk": ...}`; those land
in the object as fields of their own, so logs can be searched by batch without parsing
messages. RequestIdFilter adds `request_id` the same way: the id of the request being
served, or of the request that committed (or re-ran) the batch a worker is running
(batchsite.requestid); plain lines show it in brackets after the logger's name.

This module is imported by the settings, and by logging configuration before Django's apps
are ready: it must not import models or read settings.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from batchsite.requestid import HEADER, request_id_get

# BATCHSITE_LOG_FORMAT's values, the default first.
LOG_FORMATS = ("plain", "json")
# Attributes a record may carry through `extra=` that are copied into the JSON object.
EXTRA_FIELDS = ("batch", "item", "chunk", "request_id")
# gunicorn's access records carry the response's headers in their args under this key.
ACCESS_REQUEST_ID = "{" + HEADER.lower() + "}o"

REDACTED = "[redacted]"
# A batchsite API key, PREFIX.SECRET (djangorestframework-api-key's 8 and 32 characters):
# the prefix names the key and stays.
API_KEY = re.compile(r"\b(?P<keep>[A-Za-z0-9]{8}\.)[A-Za-z0-9]{32}\b")
# A webhook secret (batches.webhooks.SECRET_PREFIX).
WEBHOOK_SECRET = re.compile(r"\b(?P<keep>whsec_)[A-Za-z0-9_+/=-]+")
# Credentials in an Authorization header's words.
CREDENTIALS = re.compile(r"\b(?P<keep>(?:Api-Key|Basic|Bearer)\s+)[^\s,;\"']+", re.IGNORECASE)
# A query or form parameter; its value is a secret when its name says so (BrightLocal's
# `api-key`, or a key, token or password a client sent under another name by mistake).
PARAMETER = re.compile(r"(?P<keep>[?&](?P<name>[^=&#\s\"']+)=)[^&#\s\"']*")
SECRET_NAME = re.compile(r"key|token|secret|passw|auth|signature", re.IGNORECASE)


def secrets_redact(text: str) -> str:
    """Return `text` with API keys, webhook secrets and credential parameters blanked out."""
    text = API_KEY.sub(rf"\g<keep>{REDACTED}", text)
    text = WEBHOOK_SECRET.sub(rf"\g<keep>{REDACTED}", text)
    text = CREDENTIALS.sub(rf"\g<keep>{REDACTED}", text)
    return PARAMETER.sub(
        lambda match: (
            match["keep"] + REDACTED
            if SECRET_NAME.search(unquote_plus(match["name"]))
            else match[0]
        ),
        text,
    )


class SecretsFilter(logging.Filter):
    """Blank out API keys, webhook secrets and credentials in what a record will print.

    On a logger it cleans the records that logger makes before any handler sees them (the
    development server's request lines carry query strings, where BrightLocal clients put
    their key; SQL lines carry the values written, webhook secrets among them). On a
    handler it is the last guard for every record that handler prints.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message (and SQL extras) without secrets; never drop it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format: logging reports it itself
            return True
        redacted = secrets_redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        for name in ("sql", "params"):  # django.db.backends' extras
            if hasattr(record, name):
                value = str(getattr(record, name))
                if secrets_redact(value) != value:
                    setattr(record, name, secrets_redact(value))
        return True


class RequestIdFilter(logging.Filter):
    """Put the request id on the record: `request_id` ("" without one) and `request_tag`.

    The id comes from `extra=` when given, else from the context (the request being
    served, or the request a worker acts for). Lines written once the request has left
    the middleware take it from what they carry: Django's `django.request` lines (a 4xx or
    5xx) from their request, gunicorn's access lines from the response's X-Request-ID
    header. `request_tag` is what plain lines print: "[<id>] ", or nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the record's request id and tag; never drop it."""
        request_id = (
            getattr(record, "request_id", None)
            or request_id_get()
            or getattr(getattr(record, "request", None), "request_id", None)
        )
        if not request_id and isinstance(record.args, dict):
            found = record.args.get(ACCESS_REQUEST_ID)
            request_id = found if isinstance(found, str) and found != "-" else ""
        record.request_id = request_id or ""
        record.request_tag = f"[{request_id}] " if request_id else ""
        return True


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
            if value is not None and value != "":
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: ids are often UUIDs; a log line must never fail to serialize.
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(*, log_format: str, batches_level: str, q_level: str) -> dict[str, Any]:
    """Return Django's LOGGING: console lines in `log_format` ("plain" or "json"), no secrets.

    SecretsFilter blanks secrets out of what the loggers that print client input make (the
    development server's request lines, SQL), and out of everything the console prints;
    RequestIdFilter gives every line the console prints its request id (first: it reads
    gunicorn's access atoms, which SecretsFilter folds into the message it redacts).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "secrets": {"()": "batchsite.logging.SecretsFilter"},
            "request_id": {"()": "batchsite.logging.RequestIdFilter"},
        },
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(request_tag)s%(message)s"},
            "json": {"()": "batchsite.logging.JsonFormatter"},
            # Django's own, for `runserver`'s request lines.
            "django.server": {
                "()": "django.utils.log.ServerFormatter",
                "format": "[{server_time}] {message}",
                "style": "{",
            },
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["request_id", "secrets"],
            },
            "django.server": {
                "class": "logging.StreamHandler",
                "formatter": "django.server",
                "level": "INFO",
            },
        },
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {
            "batches": {"level": batches_level},
            "django-q": {"level": q_level},
            # As Django configures it, plus the filter: request lines carry query strings.
            "django.server": {
                "handlers": ["django.server"],
                "level": "INFO",
                "propagate": False,
                "filters": ["secrets"],
            },
            "django.db.backends": {"filters": ["secrets"]},
        },
    }


def gunicorn_logging_config(*, log_format: str) -> dict[str, Any]:
    """Return gunicorn's `logconfig_dict`: its error and access lines as batchsite's own lines.

    Error lines go where the app's go (the console handler, stderr); access lines to stdout.
    Both pass SecretsFilter: request lines carry query strings, where BrightLocal clients
    put their key. The workers keep these handlers when Django configures LOGGING, which
    names no gunicorn logger.
    """
    config = logging_config(log_format=log_format, batches_level="INFO", q_level="WARNING")
    config["handlers"]["access"] = {
        "class": "logging.StreamHandler",
        "formatter": log_format,
        "filters": ["request_id", "secrets"],
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["gunicorn.error"] = {
        "level": "INFO",
        "handlers": ["console"],
        "propagate": False,
    }
    config["loggers"]["gunicorn.access"] = {
        "level": "INFO",
        "handlers": ["access"],
        "propagate": False,
    }
    return config
