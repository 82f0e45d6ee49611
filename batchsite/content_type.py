"""Keep a Content-Type Django cannot build a request from away from Django.

Django reads a request's Content-Type parameters as it builds the request, before any
middleware or view, and two kinds of parameter make that raise, so the web server
answers its own HTML 500: an RFC 2231 parameter naming an unknown charset
(`charset*=no-such''x`, ValueError), and a charset that is a codec but no text encoding
(`charset=bz2_codec`, LookupError once the URL has a query string). The WSGI and ASGI
entry points pass such a Content-Type on as its bare media type, as Django already
drops a charset it does not know; the request is then answered as any other (a
multipart body left without its boundary, for one, is a 400).
"""

from __future__ import annotations

from django.utils.http import parse_header_parameters


def usable_content_type(content_type: str) -> str:
    """Return `content_type`, or only its media type if Django could not read its parameters."""
    if ";" not in content_type:
        return content_type
    try:
        _, params = parse_header_parameters(content_type)
        if "charset" in params:
            # What DRF checks too: only a text encoding can decode a body or a query.
            "".encode(params["charset"])
    except (ValueError, LookupError):
        return content_type.split(";", 1)[0].strip()
    return content_type


def wsgi_guarded(application):
    """Wrap a WSGI application so that Django never sees an unusable Content-Type."""

    def guarded(environ, start_response):
        if "CONTENT_TYPE" in environ:
            environ["CONTENT_TYPE"] = usable_content_type(environ["CONTENT_TYPE"])
        return application(environ, start_response)

    return guarded


def asgi_guarded(application):
    """Wrap an ASGI application so that Django never sees an unusable Content-Type."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = [
                (name, _usable(value) if name.lower() == b"content-type" else value)
                for name, value in scope["headers"]
            ]
            scope = {**scope, "headers": headers}
        return await application(scope, receive, send)

    return guarded


def _usable(value: bytes) -> bytes:
    return usable_content_type(value.decode("latin-1")).encode("latin-1")
