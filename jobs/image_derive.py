"""The `image.derive` job type: DLCS-style derivatives (thumbnails, format conversion) with Pillow.

Each item is one image: its file, or, for an item without a file, the image at its
payload's `origin` URL, fetched by the worker through the outbound guard (allow-list,
public addresses, every redirect checked) within BATCHSITE_MAX_UPLOAD_BYTES and
BATCHSITE_SOURCE_TIMEOUT. The type writes one derivative per requested box, named
`<stem>_<w>x<h>.<ext>`, so the batch package holds them all. Sizes are boxes: `fit`
scales the image down to fit inside the box keeping its aspect ratio (never up), `fill`
scales and centre-crops it to exactly the box.

Hostile input is expected: only common raster formats are opened (never EPS or other
formats that hand the file to an outside program), images with more pixels than
BATCHSITE_IMAGE_MAX_PIXELS are refused before they are decoded (Pillow's decompression
bomb guard, its warning made an error), and truncated or corrupt files fail their item
permanently. EXIF orientation is applied, so derivatives look the way the source is
shown, and is not copied to them.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from jobs import outbound
from jobs.base import JobContext, JobError, JobType, PayloadError, PermanentError, TransientError

DEFAULT_MAX_PIXELS = 50_000_000
# DLCS's default thumbnail boxes; used when a payload names no sizes (a ZIP member's
# payload is always empty).
DEFAULT_SIZES = [[100, 100], [200, 200], [400, 400], [1024, 1024]]
MAX_SIZES = 10
MAX_SIDE = 10_000
# name in the payload -> (Pillow format, file extension)
FORMATS = {"jpeg": ("JPEG", "jpg"), "png": ("PNG", "png"), "webp": ("WEBP", "webp")}
MODES = ("fit", "fill")
DEFAULT_FORMAT = "jpeg"
DEFAULT_QUALITY = 85
DEFAULT_MODE = "fit"
# Formats Pillow may open: plain raster decoders only.
SOURCE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
MAX_ORIGIN_LENGTH = 2000
# A fetched origin stays in memory up to this size, then spills to a temporary file.
ORIGIN_SPOOL_BYTES = 8 * 1024 * 1024
DEFAULT_ORIGIN_MAX_BYTES = 2 * 1024**3
DEFAULT_ORIGIN_TIMEOUT = 60


def max_pixels() -> int:
    """Return the most pixels a source image may have."""
    return getattr(settings, "BATCHSITE_IMAGE_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def origin_fetch(url: str) -> IO[bytes]:
    """Fetch an image from its origin into a temporary file, rewound; the caller closes it.

    A refused URL, a 4xx answer (429 aside) and an image over the size limit fail the
    item permanently; an unreachable or slow origin, a 5xx and a 429 are transient, so
    the item is tried again.
    """
    limit = getattr(settings, "BATCHSITE_MAX_UPLOAD_BYTES", DEFAULT_ORIGIN_MAX_BYTES)
    timeout = getattr(settings, "BATCHSITE_SOURCE_TIMEOUT", DEFAULT_ORIGIN_TIMEOUT)
    spool = tempfile.SpooledTemporaryFile(max_size=ORIGIN_SPOOL_BYTES)  # noqa: SIM115
    try:
        with outbound.Client(timeout=timeout) as client:
            outbound.download(
                client, url, spool, max_bytes=limit, timeout=timeout, what="the origin"
            )
    except BaseException as exc:
        spool.close()
        error = _origin_error(exc, url)
        if error is None:
            raise
        raise error from exc
    spool.seek(0)
    return spool


def _origin_error(exc: BaseException, url: str) -> JobError | None:
    host = urlsplit(url).hostname
    if isinstance(exc, outbound.OutboundRefused):
        return PermanentError(f"the origin is refused: {exc}", code="origin_refused")
    if isinstance(exc, outbound.DownloadTooLarge):
        return PermanentError(str(exc), code="origin_too_large")
    if isinstance(exc, outbound.DownloadFailed):
        if exc.status is not None and exc.status < 500 and exc.status != 429:
            return PermanentError(f"{exc} ({url})", code="origin_unreadable")
        return TransientError(f"{exc} ({url})", code="origin_unreadable")
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"the origin {host} did not answer in time", code="origin_timeout")
    if isinstance(exc, httpx.HTTPError):
        return TransientError(f"cannot reach the origin {host}: {exc}", code="origin_unreachable")
    return None


class ImageDerive(JobType):
    """Write resized and converted copies of an image, one per requested box."""

    name = "image.derive"
    description = (
        "Derives images (DLCS style): one file per box in `sizes` ([[w, h], ...]; default "
        "100, 200, 400 and 1024 square), in `format` (jpeg, png or webp) at `quality`; "
        "`mode` fit (inside the box, aspect kept, never enlarged) or fill (cropped to "
        "exactly the box). Files are named <stem>_<w>x<h>.<ext>."
    )
    payload_schema = {
        "type": "object",
        "properties": {
            "sizes": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_SIZES,
                "uniqueItems": True,
                "items": {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"type": "integer", "minimum": 1, "maximum": MAX_SIDE},
                },
                "default": DEFAULT_SIZES,
                "description": "boxes as [width, height] pairs",
            },
            "format": {"enum": list(FORMATS), "default": DEFAULT_FORMAT},
            "quality": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100,
                "default": DEFAULT_QUALITY,
            },
            "mode": {"enum": list(MODES), "default": DEFAULT_MODE},
            "origin": {
                "type": "string",
                "format": "uri",
                "maxLength": MAX_ORIGIN_LENGTH,
                "description": (
                    "for an item without a file: the image's URL, fetched by the worker; "
                    "its host must be in BATCHSITE_OUTBOUND_ALLOWED_HOSTS"
                ),
            },
        },
        "additionalProperties": False,
    }
    accepts_file = True
    chunk_size = 100
    slice_size = 10
    max_attempts = 2

    def validate_payload(self, payload: dict[str, Any]) -> None:
        """Check what the schema cannot: fill's pixel limit, and that the origin may be fetched."""
        errors: dict[str, str] = {}
        if payload.get("mode", DEFAULT_MODE) == "fill":
            for position, (width, height) in enumerate(payload.get("sizes", DEFAULT_SIZES)):
                if width * height > max_pixels():
                    errors[f"payload.sizes[{position}]"] = (
                        f"{width}x{height} has more pixels than the limit of {max_pixels()} "
                        "for fill"
                    )
        if "origin" in payload:
            problem = outbound.url_problem(payload["origin"], max_length=MAX_ORIGIN_LENGTH)
            if problem:
                errors["payload.origin"] = problem
        if errors:
            raise PayloadError(errors)

    def process(self, payload: dict[str, Any], file: IO[bytes] | None, context: JobContext) -> Any:
        """Decode the image (its file, else fetched from its origin), then derive each box."""
        if file is not None:
            return self._derive(payload, file, context.input_name, context)
        if "origin" not in payload:
            raise PermanentError("image.derive needs an image file or an origin", code="no_file")
        with origin_fetch(payload["origin"]) as fetched:
            name = PurePosixPath(urlsplit(payload["origin"]).path).name
            return self._derive(payload, fetched, name, context)

    def _derive(
        self, payload: dict[str, Any], file: IO[bytes], name: str, context: JobContext
    ) -> dict[str, Any]:
        sizes = payload.get("sizes", DEFAULT_SIZES)
        fmt = payload.get("format", DEFAULT_FORMAT)
        quality = payload.get("quality", DEFAULT_QUALITY)
        mode = payload.get("mode", DEFAULT_MODE)
        image = self._open(file)
        source = {
            "width": image.width,
            "height": image.height,
            "format": (image.format or "").lower(),
        }
        icc_profile = image.info.get("icc_profile")
        image = _prepared(image, fmt)
        stem = PurePosixPath(name).stem or "image"
        pil_format, extension = FORMATS[fmt]
        derivatives = []
        for width, height in sizes:
            if mode == "fill":
                derived = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
            else:
                derived = image.copy()
                derived.thumbnail((width, height), Image.Resampling.LANCZOS)
            name = f"{stem}_{width}x{height}.{extension}"
            path = context.output_path(name)
            derived.save(path, format=pil_format, **_save_options(fmt, quality, icc_profile))
            derivatives.append(
                {
                    "name": name,
                    "width": derived.width,
                    "height": derived.height,
                    "format": fmt,
                    "bytes": path.stat().st_size,
                }
            )
        return {"source": source, "derivatives": derivatives}

    @staticmethod
    def _open(file: IO[bytes]) -> Image.Image:
        """Open and fully decode the image, oriented; refuse bombs and broken files."""
        limit = max_pixels()
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image: Image.Image = Image.open(file, formats=SOURCE_FORMATS)
                image.load()
                source_format = image.format
                image = ImageOps.exif_transpose(image)
                image.format = source_format
                return image
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PermanentError(
                f"the image has more pixels than the limit of {limit}: {exc}",
                code="decompression_bomb",
            ) from None
        except UnidentifiedImageError:
            raise PermanentError(
                f"not an image this type reads ({', '.join(SOURCE_FORMATS)})", code="bad_image"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise PermanentError(f"the image is damaged: {exc}", code="bad_image") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def _prepared(image: Image.Image, fmt: str) -> Image.Image:
    """Return the image in a mode that resizes smoothly and that `fmt` can store.

    Palette and bilevel images are expanded so resampling is not nearest-neighbour, and
    JPEG, which has no alpha, gets transparent areas flattened onto white.
    """
    alpha = _has_alpha(image)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if alpha else "RGB")
    if fmt == "jpeg" and alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif fmt == "webp" and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
    return image


def _save_options(fmt: str, quality: int, icc_profile: bytes | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if fmt == "jpeg":
        options.update(quality=quality, optimize=True)
    elif fmt == "webp":
        options.update(quality=quality, method=4)
    else:
        options.update(optimize=True)
    return options
