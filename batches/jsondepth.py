"""Tell how deeply JSON text nests without parsing it, so deep input is refused cheaply.

Python's json module recurses once per level of nesting: a text a few thousand levels
deep raises RecursionError, and every level short of that builds objects first. The
check runs before the parser, at C speed whatever the input:

- a text with no more `[` and `{` than the limit cannot nest deeper (two counts);
- otherwise it is cut down to its skeleton (quotes and brackets, escaped quotes and
  backslashes taken out first); strings without brackets in them are then `""` pairs,
  which go in one pass; what is left inside the remaining strings goes with them; and
  the running depth of the brackets left is summed block by block, so a deep text is
  refused at its first deep block.

For JSON the depth found is exact. Text that is not JSON may be called too deep where
the parser would have refused it for a syntax error first; never the other way round.
"""

from __future__ import annotations

import re
from itertools import accumulate

from django.conf import settings

from batches.exceptions import JsonTooDeep

# BATCHSITE_JSON_MAX_DEPTH's default, for callers that are not given the setting.
DEFAULT_MAX_DEPTH = 64
# Every byte but the quote and the brackets, which are all a skeleton keeps.
_NOT_SKELETON = bytes(byte for byte in range(256) if byte not in b'"[]{}')
# How each byte of a skeleton moves the depth.
_STEP = [1 if byte in b"[{" else -1 if byte in b"]}" else 0 for byte in range(256)]
_BLOCK = 64 * 1024
# A string (skipped) or a bracket, for finding where a value ends.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_too_deep(text: str | bytes, limit: int) -> bool:
    """Return True if arrays and objects in the JSON `text` nest more than `limit` deep."""
    if isinstance(text, str):
        if text.count("[") + text.count("{") <= limit:
            return False
        # Lone surrogates (bytes read with surrogateescape) pass through as non-ASCII.
        data = text.encode("utf-8", "surrogatepass")
    else:
        if text.count(b"[") + text.count(b"{") <= limit:
            return False
        data = text
    if b"\\" in data:
        # Pairs first, so that in \\" the quote still ends its string.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Taking out two quotes side by side leaves every other quote's role as it was.
    skeleton = data.translate(None, _NOT_SKELETON).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    depth = 0
    for start in range(0, len(skeleton), _BLOCK):
        block = skeleton[start : start + _BLOCK]
        levels = list(accumulate(map(_STEP.__getitem__, block), initial=depth))
        if max(levels) > limit:
            return True
        depth = levels[-1]
    return False


def json_depth_check(text: str | bytes, *, field: str = "body") -> None:
    """Raise JsonTooDeep if the JSON `text` nests deeper than BATCHSITE_JSON_MAX_DEPTH."""
    limit = settings.BATCHSITE_JSON_MAX_DEPTH
    if json_too_deep(text, limit):
        raise JsonTooDeep(field=field, limit=limit)


def json_value_end(text: str, start: int) -> int | None:
    """Return where the array or object that opens at `text[start]` ends, or None if it
    does not end within `text`.

    A Python loop over its strings and brackets: for skipping a value too deep to parse,
    not for every value.
    """
    depth = 0
    for token in _TOKEN.finditer(text, start):
        if token.group() in ("[", "{"):
            depth += 1
        elif token.group() in ("]", "}"):
            depth -= 1
            if depth == 0:
                return token.end()
    return None
