"""A parser that leaves the body unread, for views that stream it themselves."""

from rest_framework.parsers import BaseParser


class RawBodyParser(BaseParser):
    """Accept any media type without reading the body; the view reads the stream."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        """Return nothing: the body stays in the request stream for the view."""
        return {}
