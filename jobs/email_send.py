"""The `email.send` job type: one email per item, through Django's mail framework.

Mail goes out through EMAIL_BACKEND (SMTP in production, locmem in tests). In an atomic
batch nothing may be sent unless every item validated and rendered, so the type also
offers `finalize_send`: it prepares every message first and sends them only if all were
prepared. `defer_in_atomic` tells the engine to use it instead of sending per item.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
from email.utils import formataddr, make_msgid, parseaddr
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPEmailBackend
from django.core.mail.message import sanitize_address
from django.core.mail.utils import DNS_NAME
from django.core.validators import validate_email
from django.utils.encoding import punycode
from django.utils.module_loading import import_string

from jobs.base import (
    JobContext,
    JobError,
    JobType,
    PayloadError,
    PermanentError,
    TransientError,
)

MAX_RECIPIENTS = 100
MAX_SUBJECT = 998  # the longest line RFC 5322 allows
# How many unpreparable items a finalize_send error names.
MAX_REPORTED = 10
NAMED_ADDRESS = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<address>[^<>\s]+)>\s*$")


def address_normalize(value: Any) -> str:
    """Return `value` as one address, `a@b.example` or `Name <a@b.example>`; else ValueError."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if "\r" in value or "\n" in value:
        raise ValueError("must be on one line")
    match = NAMED_ADDRESS.match(value)
    name, address = (match["name"].strip().strip('"'), match["address"]) if match else ("", value)
    try:
        validate_email(address)
    except ValidationError:
        raise ValueError("is not a valid email address") from None
    return formataddr((name, address)) if name else address


def address_comparable(address: str) -> str:
    """Return a bare address as compared with the allowed senders: its domain lower-cased.

    The local part is kept as it is, since mail servers may tell its cases apart; the
    domain is put in its ASCII (IDNA) form, as it is sent.
    """
    local, _, domain = address.rpartition("@")
    # A domain that has no ASCII form is compared as it is (and matches no allowed one).
    with contextlib.suppress(UnicodeError):
        domain = punycode(domain)
    return f"{local}@{domain.lower()}"


def sender_allowed(value: str) -> bool:
    """Say whether mail may go out from `value` (`a@b.example` or `Name <a@b.example>`).

    Allowed: DEFAULT_FROM_EMAIL's address and BATCHSITE_EMAIL_ALLOWED_FROM's entries, each
    an address or `@domain` (any address of exactly that domain, not of its subdomains).
    The address is read from `value` as address_normalize writes it, which is what is sent:
    parsers differ on odd input such as `a@allowed.example <b@other.example>`.
    """
    try:
        address = parseaddr(address_normalize(value))[1]
    except ValueError:
        return False
    if "@" not in address:
        return False
    address = address_comparable(address)
    domain = address.rpartition("@")[2]
    for entry in [settings.DEFAULT_FROM_EMAIL, *settings.BATCHSITE_EMAIL_ALLOWED_FROM]:
        if entry.startswith("@"):
            if domain == address_comparable(entry).rpartition("@")[2]:
                return True
        elif address == address_comparable(parseaddr(entry)[1]):
            return True
    return False


def senders_allowed_text() -> str:
    """Name the allowed senders, for a refusal's message."""
    default = parseaddr(settings.DEFAULT_FROM_EMAIL)[1]
    entries = [default, *(e for e in settings.BATCHSITE_EMAIL_ALLOWED_FROM if e != default)]
    return ", ".join(entries)


def _delivery_error(exc: Exception) -> JobError:
    """Map what the mail backend raised to a permanent or a transient item error.

    SMTP replies in the 5xx range are final; 4xx replies, dropped connections and network
    errors may go away, so the item is tried again.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = exc.recipients.values()
        refused = ", ".join(exc.recipients)
        if replies and all(code >= 500 for code, _ in replies):
            return PermanentError(f"the mail server refused {refused}", code="recipient_refused")
        return TransientError(f"the mail server deferred {refused}", code="smtp_deferred")
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = f"{exc.smtp_code} {exc.smtp_error!r}"
        if 500 <= exc.smtp_code < 600:
            code = (
                "sender_refused" if isinstance(exc, smtplib.SMTPSenderRefused) else "smtp_rejected"
            )
            return PermanentError(f"the mail server refused the message: {reply}", code=code)
        return TransientError(
            f"the mail server deferred the message: {reply}", code="smtp_deferred"
        )
    return TransientError(f"cannot deliver to the mail server: {exc}", code="smtp_unavailable")


class EmailSend(JobType):
    """Send one email, plain text with an optional HTML alternative."""

    name = "email.send"
    description = (
        "Sends one email through the configured mail backend: `to` (an address or a list), "
        "`subject`, `text`, optional `html` and `from`. Returns `to` and `message_id`. "
        "Refused recipients fail the item; an unreachable or busy mail server is retried."
    )
    payload_schema = {
        "type": "object",
        "required": ["to", "subject", "text"],
        "properties": {
            "to": {
                "oneOf": [
                    {"type": "string", "format": "email"},
                    {
                        "type": "array",
                        "items": {"type": "string", "format": "email"},
                        "minItems": 1,
                        "maxItems": MAX_RECIPIENTS,
                    },
                ],
                "description": "`a@b.example` or `Name <a@b.example>`, or a list of them",
            },
            "subject": {"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT},
            "text": {"type": "string"},
            "html": {"type": "string"},
            "from": {
                "type": "string",
                "description": (
                    "default: DEFAULT_FROM_EMAIL; only it and the addresses and domains in "
                    "BATCHSITE_EMAIL_ALLOWED_FROM are allowed"
                ),
            },
        },
        "additionalProperties": False,
    }
    chunk_size = 100
    slice_size = 20
    max_attempts = 4
    retry_backoff = 5.0
    retry_backoff_max = 120.0
    # In an atomic batch the engine calls finalize_send with every payload instead of
    # calling process per item, so that nothing is sent unless everything can be.
    defer_in_atomic = True

    def readiness(self) -> str | None:
        """Say what to configure when mail would go to an SMTP server nobody named.

        Django's default is the SMTP backend on localhost, which on most hosts has no mail
        server: every item would be retried, then fail. So the SMTP backend counts as
        ready only once EMAIL_HOST is set (to "localhost" too, for a local MTA); any other
        backend (console, file, locmem, a provider's) is ready as it is.
        """
        try:
            backend = import_string(settings.EMAIL_BACKEND)
        except ImportError:
            return f"EMAIL_BACKEND {settings.EMAIL_BACKEND!r} cannot be imported; fix EMAIL_BACKEND"
        # django-stubs types `settings` as the Settings module, without LazySettings' methods.
        overridden = settings.is_overridden("EMAIL_HOST")  # type: ignore[misc]
        if issubclass(backend, SMTPEmailBackend) and not overridden:
            return (
                "no mail server is configured; set EMAIL_HOST (with EMAIL_PORT, "
                "EMAIL_HOST_USER, EMAIL_HOST_PASSWORD and EMAIL_USE_TLS as it needs), or "
                "EMAIL_BACKEND to another Django mail backend"
            )
        return None

    def validate_payload(self, payload: dict[str, Any]) -> None:
        """Check what the schema cannot: each address, the sender, a one-line subject."""
        errors = {}
        recipients = payload["to"] if isinstance(payload["to"], list) else [payload["to"]]
        for position, value in enumerate(recipients):
            try:
                address_normalize(value)
            except ValueError as exc:
                path = "payload.to" if isinstance(payload["to"], str) else f"payload.to[{position}]"
                errors[path] = str(exc)
        if "\r" in payload["subject"] or "\n" in payload["subject"]:
            errors["payload.subject"] = "must be on one line"
        if "from" in payload:
            sender_error = self._sender_error(payload["from"])
            if sender_error:
                errors["payload.from"] = sender_error
        if errors:
            raise PayloadError(errors)

    @staticmethod
    def _sender_error(value: Any) -> str:
        try:
            sender = address_normalize(value)
        except ValueError as exc:
            return str(exc)
        if not sender_allowed(sender):
            return (
                f"{parseaddr(sender)[1]} is not a sender this server may send as "
                f"(allowed: {senders_allowed_text()})"
            )
        return ""

    def prepare(self, payload: dict[str, Any]) -> EmailMultiAlternatives:
        """Build and render the message for `payload`; raise PermanentError if it cannot be.

        The payload is checked again, since the settings (the allowed senders) may have
        changed since it was submitted.
        """
        try:
            self.payload_check(payload)
        except PayloadError as exc:
            raise PermanentError(f"bad payload: {exc}", code="bad_payload") from exc
        to = payload["to"] if isinstance(payload["to"], list) else [payload["to"]]
        message = EmailMultiAlternatives(
            subject=payload["subject"],
            body=payload["text"],
            from_email=address_normalize(payload["from"]) if "from" in payload else None,
            to=[address_normalize(address) for address in to],
            # Chosen here rather than by Django at send time, so the result can name it.
            headers={"Message-ID": make_msgid(domain=DNS_NAME)},
        )
        if "html" in payload:
            message.attach_alternative(payload["html"], "text/html")
        encoding = message.encoding or settings.DEFAULT_CHARSET
        try:
            # Render it now, as the backend will, so a message that cannot be sent fails
            # here and not halfway through a delivery.
            message.message()
            for address in [message.from_email, *message.recipients()]:
                sanitize_address(address, encoding)
        except (ValueError, UnicodeError) as exc:  # BadHeaderError is a ValueError
            raise PermanentError(
                f"the message cannot be rendered: {exc}", code="bad_message"
            ) from exc
        return message

    def process(self, payload: dict[str, Any], file: IO[bytes] | None, context: JobContext) -> Any:
        """Send the item's message on its own connection; return recipients and Message-ID."""
        message = self.prepare(payload)
        try:
            message.send(fail_silently=False)
        except (smtplib.SMTPException, OSError) as exc:
            raise _delivery_error(exc) from exc
        return {"to": message.to, "message_id": message.extra_headers["Message-ID"]}

    def finalize_send(self, payloads: list[dict[str, Any]]) -> int:
        """Prepare every message, then send them all over one connection; return how many.

        Sends nothing if any payload cannot be prepared (PermanentError "not_prepared").
        Preparing first is what makes it all or none: once sending has begun a failing
        mail server cannot take back what it accepted, so a failure after the first message
        is a PermanentError "partially_sent" (trying again would send duplicates), and one
        before it is mapped as for a single item.
        """
        messages = []
        problems = []
        for index, payload in enumerate(payloads):
            try:
                messages.append(self.prepare(payload))
            except PermanentError as exc:
                problems.append(f"[{index}] {exc.message}")
        if problems:
            shown = "; ".join(problems[:MAX_REPORTED])
            more = (
                f" (and {len(problems) - MAX_REPORTED} more)"
                if len(problems) > MAX_REPORTED
                else ""
            )
            raise PermanentError(
                f"{len(problems)} of {len(payloads)} messages cannot be prepared, so none was "
                f"sent: {shown}{more}",
                code="not_prepared",
            )
        if not messages:
            return 0
        sent = 0
        try:
            with get_connection(fail_silently=False) as connection:
                for message in messages:
                    sent += connection.send_messages([message]) or 0
        except (smtplib.SMTPException, OSError) as exc:
            if sent:
                raise PermanentError(
                    f"the mail server failed after {sent} of {len(messages)} messages were "
                    f"sent: {exc}",
                    code="partially_sent",
                ) from exc
            raise _delivery_error(exc) from exc
        return sent
