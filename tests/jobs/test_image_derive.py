"""Tests for the image.derive job type on real images made with Pillow."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile

import pytest
from PIL import Image

from batches.models import Batch, Item
from jobs.base import JobContext, PayloadError, PermanentError, TransientError
from jobs.image_derive import DEFAULT_SIZES, ImageDerive
from tests.helpers.api import assert_problem, batch_url, create_batch, error_fields

ZIP = "application/zip"
EXIF_ORIENTATION = 0x0112
RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def registered(settings, tmp_path):
    """Register image.derive and give each test its own data dir."""
    settings.BATCHSITE_JOB_TYPES = [*settings.BATCHSITE_JOB_TYPES, "jobs.image_derive.ImageDerive"]
    settings.MEDIA_ROOT = tmp_path / "files"


def image_bytes(
    size=(400, 200), fmt="PNG", mode="RGB", color=(200, 100, 50), **save_options
) -> bytes:
    """Return an image file: a left half in `color`, a right half blue, so crops show."""
    image = Image.new(mode, size, color if mode != "RGBA" else (*color, 128))
    half = Image.new(mode, (size[0] // 2 or 1, size[1]), BLUE if mode != "RGBA" else (*BLUE, 255))
    image.paste(half, (size[0] - half.width, 0))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_options)
    return buffer.getvalue()


def noise_bytes(size=(300, 300), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 80).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def derive(payload, data: bytes, tmp_path, name="photo.png"):
    """Run image.derive on `data`; return its result and {output name: path}."""
    context = JobContext(input_name=name, output_dir=tmp_path / "out")
    result = ImageDerive().process(payload, io.BytesIO(data), context)
    return result, dict(context.outputs)


def dimensions(result) -> list[tuple[int, int]]:
    return [(d["width"], d["height"]) for d in result["derivatives"]]


# --- sizes and modes -----------------------------------------------------------------------------


def test_image_derive__fit_keeps_the_aspect_inside_each_box(tmp_path):
    result, outputs = derive({"sizes": [[100, 100], [50, 80], [1000, 50]]}, image_bytes(), tmp_path)

    assert result["source"] == {"width": 400, "height": 200, "format": "png"}
    assert dimensions(result) == [(100, 50), (50, 25), (100, 50)]
    assert list(outputs) == ["photo_100x100.jpg", "photo_50x80.jpg", "photo_1000x50.jpg"]
    for derivative in result["derivatives"]:
        path = outputs[derivative["name"]]
        with Image.open(path) as written:
            assert written.size == (derivative["width"], derivative["height"])
            assert written.format == "JPEG"
        assert derivative["format"] == "jpeg"
        assert derivative["bytes"] == path.stat().st_size > 0


def test_image_derive__fit_never_enlarges(tmp_path):
    result, _ = derive({"sizes": [[500, 500]]}, image_bytes(size=(40, 20)), tmp_path)

    assert dimensions(result) == [(40, 20)]


def test_image_derive__fill_crops_to_exactly_the_box(tmp_path):
    payload = {"sizes": [[100, 100], [50, 80], [600, 300]], "mode": "fill"}

    result, outputs = derive(payload, image_bytes(), tmp_path)

    assert dimensions(result) == [(100, 100), (50, 80), (600, 300)]
    for name, box in zip(outputs, payload["sizes"], strict=True):
        with Image.open(outputs[name]) as written:
            assert list(written.size) == box
    # A centred square crop of a half-orange, half-blue image keeps both halves.
    with Image.open(outputs["photo_100x100.jpg"]) as square:
        left, right = square.convert("RGB").getpixel((10, 50)), square.getpixel((90, 50))
    assert left[0] > 150
    assert left[2] < 100
    assert right[2] > 150
    assert right[0] < 100


def test_image_derive__empty_payload_uses_the_default_sizes(tmp_path):
    result, outputs = derive({}, image_bytes(size=(2048, 1024)), tmp_path)

    assert dimensions(result) == [(w, w // 2) for w, _ in DEFAULT_SIZES]
    assert len(outputs) == len(DEFAULT_SIZES)


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_format", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize(
    ("fmt", "pil_format", "extension"),
    [("jpeg", "JPEG", "jpg"), ("png", "PNG", "png"), ("webp", "WEBP", "webp")],
)
def test_image_derive__converts_between_formats(
    tmp_path, source_format, fmt, pil_format, extension
):
    data = image_bytes(fmt=source_format)

    result, outputs = derive({"sizes": [[64, 64]], "format": fmt}, data, tmp_path, name="in.x")

    assert result["source"]["format"] == source_format.lower()
    assert list(outputs) == [f"in_64x64.{extension}"]
    with Image.open(outputs[f"in_64x64.{extension}"]) as written:
        assert written.format == pil_format
        assert written.size == (64, 32)
    assert result["derivatives"][0]["format"] == fmt


def test_image_derive__transparent_png_becomes_jpeg_on_white_and_keeps_alpha_as_png(tmp_path):
    data = image_bytes(mode="RGBA", color=(0, 0, 0))  # left half black at 50% opacity

    _, jpeg_out = derive({"sizes": [[40, 20]]}, data, tmp_path / "j")
    _, png_out = derive({"sizes": [[40, 20]], "format": "png"}, data, tmp_path / "p")

    with Image.open(jpeg_out["photo_40x20.jpg"]) as jpeg:
        assert jpeg.mode == "RGB"
        grey = jpeg.getpixel((5, 10))
    # Half-transparent black over white is mid grey, not black.
    assert all(100 < channel < 160 for channel in grey)
    with Image.open(png_out["photo_40x20.png"]) as png:
        assert png.mode == "RGBA"
        assert 100 < png.getpixel((5, 10))[3] < 160


def test_image_derive__palette_image_with_transparency_converts(tmp_path):
    image = Image.new("P", (60, 30), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    buffer = io.BytesIO()
    image.save(buffer, format="GIF", transparency=0)

    result, outputs = derive({"sizes": [[30, 30]]}, buffer.getvalue(), tmp_path, name="a.gif")

    assert result["source"]["format"] == "gif"
    with Image.open(outputs["a_30x30.jpg"]) as written:
        assert written.mode == "RGB"
        assert written.getpixel((15, 7))[0] > 200


def test_image_derive__lower_quality_makes_smaller_jpegs(tmp_path):
    data = noise_bytes()

    low, _ = derive({"sizes": [[300, 300]], "quality": 10}, data, tmp_path / "low")
    high, _ = derive({"sizes": [[300, 300]], "quality": 95}, data, tmp_path / "high")

    assert low["derivatives"][0]["bytes"] < high["derivatives"][0]["bytes"]


# --- EXIF orientation ----------------------------------------------------------------------------


def exif_rotated_jpeg(size=(200, 100), orientation=6) -> bytes:
    """A JPEG stored `size` with a red left and blue right half, and an EXIF orientation."""
    image = Image.new("RGB", size, RED)
    image.paste(Image.new("RGB", (size[0] // 2, size[1]), BLUE), (size[0] // 2, 0))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    return buffer.getvalue()


def test_image_derive__applies_exif_orientation(tmp_path):
    result, outputs = derive(
        {"sizes": [[1000, 1000], [50, 50]]}, exif_rotated_jpeg(), tmp_path, name="p.jpg"
    )

    # Stored 200x100; orientation 6 means "turn 90 degrees clockwise to show".
    assert result["source"] == {"width": 100, "height": 200, "format": "jpeg"}
    assert dimensions(result) == [(100, 200), (25, 50)]
    with Image.open(outputs["p_1000x1000.jpg"]) as written:
        assert written.size == (100, 200)
        # The stored left half (red) is on top once turned clockwise.
        top, bottom = written.getpixel((50, 20)), written.getpixel((50, 180))
        assert written.getexif().get(EXIF_ORIENTATION) is None
    assert top[0] > 200
    assert top[2] < 60
    assert bottom[2] > 200
    assert bottom[0] < 60


def test_image_derive__without_exif_orientation_keeps_the_stored_shape(tmp_path):
    result, _ = derive({"sizes": [[1000, 1000]]}, exif_rotated_jpeg(orientation=1), tmp_path)

    assert dimensions(result) == [(200, 100)]


# --- hostile input -------------------------------------------------------------------------------


def test_image_derive__truncated_jpeg_is_bad_image(tmp_path):
    data = noise_bytes(fmt="JPEG")

    with pytest.raises(PermanentError) as caught:
        derive({"sizes": [[10, 10]]}, data[: len(data) // 2], tmp_path)

    assert caught.value.code == "bad_image"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not an image at all" * 10, id="text"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", id="eps"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, id="png-header-only"),
    ],
)
def test_image_derive__not_an_image_is_bad_image(tmp_path, data):
    with pytest.raises(PermanentError) as caught:
        derive({"sizes": [[10, 10]]}, data, tmp_path)

    assert caught.value.code == "bad_image"


def test_image_derive__image_over_twice_the_pixel_limit_is_a_bomb(tmp_path, settings):
    settings.BATCHSITE_IMAGE_MAX_PIXELS = 1000
    before = Image.MAX_IMAGE_PIXELS

    with pytest.raises(PermanentError) as caught:
        derive({"sizes": [[10, 10]]}, image_bytes(size=(100, 100)), tmp_path)

    assert caught.value.code == "decompression_bomb"
    assert before == Image.MAX_IMAGE_PIXELS


def test_image_derive__image_between_the_limit_and_twice_it_is_a_bomb_too(tmp_path, settings):
    settings.BATCHSITE_IMAGE_MAX_PIXELS = 1000
    data = image_bytes(size=(40, 40))  # 1600 pixels: Pillow only warns about these

    with pytest.raises(PermanentError) as caught:
        derive({"sizes": [[10, 10]]}, data, tmp_path)

    assert caught.value.code == "decompression_bomb"
    # The warning was an error only inside the job: outside, Pillow's warning is back.
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        Image.MAX_IMAGE_PIXELS, before = 1000, Image.MAX_IMAGE_PIXELS
        try:
            Image.open(io.BytesIO(data)).close()
        finally:
            Image.MAX_IMAGE_PIXELS = before
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in seen)


def test_image_derive__image_under_the_pixel_limit_is_derived(tmp_path, settings):
    settings.BATCHSITE_IMAGE_MAX_PIXELS = 1000

    result, _ = derive({"sizes": [[10, 10]]}, image_bytes(size=(30, 30)), tmp_path)

    assert dimensions(result) == [(10, 10)]


def test_image_derive__item_without_a_file_or_an_origin_fails(tmp_path):
    context = JobContext(output_dir=tmp_path)

    with pytest.raises(PermanentError) as caught:
        ImageDerive().process({"sizes": [[1, 1]]}, None, context)

    assert caught.value.code == "no_file"


# --- origins -------------------------------------------------------------------------------------


@pytest.fixture
def origin_allowed(settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]


def test_image_derive__item_without_a_file_fetches_its_origin(tmp_path, httpserver, origin_allowed):
    httpserver.expect_request("/scans/page-7.png").respond_with_data(
        image_bytes((400, 200)), content_type="image/png"
    )
    payload = {"origin": httpserver.url_for("/scans/page-7.png"), "sizes": [[100, 100]]}
    ImageDerive().payload_check(payload)
    context = JobContext(output_dir=tmp_path / "out")

    result = ImageDerive().process(payload, None, context)

    assert result["source"] == {"width": 400, "height": 200, "format": "png"}
    assert dimensions(result) == [(100, 50)]
    assert [name for name, _ in context.outputs] == ["page-7_100x100.jpg"]


@pytest.mark.parametrize(
    ("origin", "message"),
    [
        (
            "http://example.com/a.png",
            "host 'example.com' is not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS",
        ),
        ("ftp://localhost/a.png", "only http and https URLs can be fetched, not 'ftp'"),
        ("http://[::1", "is not a valid URL: Invalid port: ':1'"),
        ("", "must be a non-empty string"),
        (5, "must be a string"),
        ("http://localhost/" + "a" * 2000, "must be at most 2000 characters"),
    ],
)
def test_image_derive__origin_that_cannot_be_fetched_is_refused_at_submission(
    origin_allowed, origin, message
):
    with pytest.raises(PayloadError) as caught:
        ImageDerive().payload_check({"origin": origin})

    assert caught.value.errors == {"payload.origin": message}


def test_image_derive__origin_refused_at_run_time_fails_permanently(tmp_path, settings):
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = []  # allowed once, since taken off the list

    with pytest.raises(PermanentError) as caught:
        ImageDerive().process({"origin": "http://localhost/a.png"}, None, JobContext())

    assert (caught.value.code, caught.value.message) == (
        "origin_refused",
        "the origin is refused: host 'localhost' is not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS",
    )


@pytest.mark.parametrize("status", [503, 429])
def test_image_derive__origin_answering_5xx_or_429_is_tried_again(
    httpserver, origin_allowed, status
):
    httpserver.expect_request("/busy.png").respond_with_data("busy", status=status)
    origin = httpserver.url_for("/busy.png")

    with pytest.raises(TransientError) as caught:
        ImageDerive().process({"origin": origin}, None, JobContext())

    assert (caught.value.code, caught.value.message) == (
        "origin_unreadable",
        f"the origin answered HTTP {status} ({origin})",
    )


# --- payloads ------------------------------------------------------------------------------------

BAD_PAYLOADS = [
    pytest.param({"sizes": []}, "payload.sizes", id="sizes-empty"),
    pytest.param({"sizes": [[10, 10]] * 11}, "payload.sizes", id="sizes-eleven"),
    pytest.param({"sizes": [[i, i] for i in range(1, 12)]}, "payload.sizes", id="sizes-many"),
    pytest.param({"sizes": [[0, 10]]}, "payload.sizes", id="width-zero"),
    pytest.param({"sizes": [[10, 10001]]}, "payload.sizes", id="height-too-big"),
    pytest.param({"sizes": [[10]]}, "payload.sizes", id="not-a-pair"),
    pytest.param({"sizes": [[10, 10, 10]]}, "payload.sizes", id="triple"),
    pytest.param({"sizes": [["10", 10]]}, "payload.sizes", id="width-str"),
    pytest.param({"sizes": [[True, 10]]}, "payload.sizes", id="width-bool"),
    pytest.param({"sizes": [[10.5, 10]]}, "payload.sizes", id="width-float"),
    pytest.param({"sizes": [[10, 10], [10, 10]]}, "payload.sizes", id="duplicate"),
    pytest.param({"sizes": "100x100"}, "payload.sizes", id="sizes-str"),
    pytest.param(
        {"sizes": [[10000, 10000]], "mode": "fill"}, "payload.sizes", id="fill-over-pixel-limit"
    ),
    pytest.param({"format": "gif"}, "payload.format", id="format-gif"),
    pytest.param({"format": "JPEG"}, "payload.format", id="format-upper"),
    pytest.param({"quality": 0}, "payload.quality", id="quality-zero"),
    pytest.param({"quality": 101}, "payload.quality", id="quality-high"),
    pytest.param({"quality": "85"}, "payload.quality", id="quality-str"),
    pytest.param({"mode": "stretch"}, "payload.mode", id="mode-unknown"),
    pytest.param({"size": [[1, 1]]}, "payload.size", id="unknown-field"),
]


@pytest.mark.parametrize(("payload", "field"), BAD_PAYLOADS)
def test_image_derive__bad_payload_is_refused(payload, field):
    with pytest.raises(PayloadError) as caught:
        ImageDerive().payload_check(payload)

    # Named down to the element at fault: payload.sizes[0][1] is a problem of payload.sizes.
    assert {path.split("[")[0] for path in caught.value.errors} == {field}


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"sizes": [[1, 1]]},
        {"sizes": [[10000, 10000]]},
        {"sizes": [[i, i] for i in range(1, 11)], "format": "webp", "quality": 1, "mode": "fill"},
        {"format": "png", "quality": 100, "mode": "fit"},
    ],
)
def test_image_derive__good_payload_is_accepted(payload):
    ImageDerive().payload_check(payload)


def test_image_derive__bad_payload_is_400_at_submission(client_a):
    batch = create_batch(client_a, type="image.derive")

    response = client_a.post(
        batch_url(batch, "items/"),
        [
            {"payload": {"sizes": [[100, 100]]}},
            {"payload": {"sizes": [[0, 100]]}},
            {"payload": {"format": "tiff", "quality": 200}},
        ],
        format="json",
    )

    body = assert_problem(response, 400, "invalid")
    assert error_fields(body) == {
        "[1].payload.sizes[0][0]",
        "[2].payload.format",
        "[2].payload.quality",
    }
    assert not Item.objects.filter(batch_id=batch["id"]).exists()


def test_image_derive__bad_payload_is_400_when_creating_a_batch(client_a):
    response = client_a.post(
        "/api/v1/batches/",
        {"type": "image.derive", "items": [{"payload": {"sizes": [], "mode": "zoom"}}]},
        format="json",
    )

    body = assert_problem(response, 400, "invalid")
    assert error_fields(body) == {"[0].payload.sizes", "[0].payload.mode"}
    assert not Batch.objects.exists()


# --- through a batch -----------------------------------------------------------------------------


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_image_derive__batch_from_a_zip_packages_every_derivative(
    client_a, django_capture_on_commit_callbacks
):
    files = {
        "wide.png": image_bytes(size=(400, 200)),
        "tall.jpg": image_bytes(size=(120, 300), fmt="JPEG"),
        "broken.jpg": noise_bytes(fmt="JPEG")[:300],
    }
    batch = create_batch(client_a, type="image.derive")
    response = client_a.generic("POST", batch_url(batch, "upload/"), make_zip(files), ZIP)
    assert response.status_code == 200, response.content

    with django_capture_on_commit_callbacks(execute=True):
        committed = client_a.post(batch_url(batch, "commit/"))
    assert committed.status_code == 200, committed.content

    finished = Batch.objects.get(pk=batch["id"])
    assert finished.status == Batch.Status.FINISHED
    assert finished.counts()["succeeded"] == 2
    broken = Item.objects.get(batch=finished, external_id="broken.jpg")
    assert (broken.status, broken.error_code) == (Item.Status.FAILED, "bad_image")
    package = client_a.get(batch_url(batch, "package/"))
    assert package.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(package.streaming_content)))
    expected = {f"{stem}_{w}x{h}.jpg" for stem in ("wide", "tall") for w, h in DEFAULT_SIZES}
    assert set(archive.namelist()) == expected | {"manifest.json"}
    with Image.open(io.BytesIO(archive.read("wide_100x100.jpg"))) as thumb:
        assert thumb.size == (100, 50)
    with Image.open(io.BytesIO(archive.read("tall_1024x1024.jpg"))) as largest:
        assert largest.size == (120, 300)
    manifest = json.loads(archive.read("manifest.json"))
    for entry in manifest["files"]:
        assert entry["sha256"] == hashlib.sha256(archive.read(entry["name"])).hexdigest()
