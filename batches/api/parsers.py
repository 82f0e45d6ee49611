"""Request body parsers: JSON with a nesting limit, and one that leaves the body unread."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import (  # type: ignore[attr-defined]  # DRF's stubs lack it
    BaseParser,
    JSONParser,
    get_encoding,
)
from rest_framework.utils import json

from batches.jsondepth import json_depth_check


class DepthLimitedJSONParser(JSONParser):
    """Parse JSON as DRF does, refusing a body nested deeper than BATCHSITE_JSON_MAX_DEPTH
    before it is parsed (JsonTooDeep), so no client can make the parser recurse."""

    def parse(self, stream, media_type=None, parser_context=None):
        """Return the parsed body."""
        encoding = get_encoding(parser_context or {})
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        json_depth_check(text)
        try:
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class RawBodyParser(BaseParser):
    """Accept any media type without reading the body; the view reads the stream."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        """Return nothing: the body stays in the request stream for the view."""
        return {}
