"""Resize and convert: the Pillow operations a user pays for on the `media` queue."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from media.ops import (
    UPSCALE_MAX_PIXELS,
    UPSCALE_MAX_SIDE,
    BadMediaParams,
    check_output_size,
    convert,
    resize,
    resize_target,
    run_operation,
    upscale_input_size,
    validate_convert_params,
    validate_resize_params,
)
from media.safety import load_image
from tests.media.corpus import decode, encode, noise

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def params_error(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(BadMediaParams) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == "bad_input"
    return caught.value.message


# ---- resize --------------------------------------------------------------------------------


def test_fit_with_one_side_keeps_the_aspect_ratio() -> None:
    out = resize(Image.new("RGB", (800, 600)), width=400, height=None, mode="fit")
    assert out.size == (400, 300)
    out = resize(Image.new("RGB", (800, 600)), width=None, height=150, mode="fit")
    assert out.size == (200, 150)


def test_fit_in_a_box_stays_inside_it() -> None:
    assert resize(Image.new("RGB", (800, 600)), width=100, height=100, mode="fit").size == (100, 75)
    assert resize(Image.new("RGB", (600, 800)), width=100, height=100, mode="fit").size == (75, 100)


def test_fill_covers_the_box_and_crops_the_centre() -> None:
    im = Image.new("RGB", (300, 100), RED)
    im.paste(GREEN, (100, 0, 200, 100))
    im.paste(BLUE, (200, 0, 300, 100))
    out = resize(im, width=50, height=50, mode="fill")
    assert out.size == (50, 50)
    for x in (1, 25, 48):
        pixel = out.getpixel((x, 25))
        assert isinstance(pixel, tuple) and pixel[1] > 230 and pixel[0] < 25 and pixel[2] < 25


def test_exact_stretches_to_the_requested_size() -> None:
    assert resize(Image.new("RGB", (800, 600)), width=123, height=45, mode="exact").size == (
        123,
        45,
    )


def test_resizing_transparent_edges_leaves_no_dark_fringe() -> None:
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # transparent BLACK ...
    im.paste((255, 255, 255, 255), (0, 0, 32, 64))  # ... next to opaque white
    out = resize(im, width=21, height=None, mode="fit")
    assert out.mode == "RGBA"
    edge = [out.getpixel((x, 10)) for x in range(out.width)]
    partial = [p for p in edge if isinstance(p, tuple) and 0 < p[3] < 255]
    assert partial, "the edge should be partly transparent"
    assert all(p[0] >= 250 for p in partial), edge


def test_no_side_may_exceed_4096_px() -> None:
    message = params_error(validate_resize_params, {"width": 5000})
    assert message == "width: must be a whole number of pixels from 1 to 4096; got 5000"
    message = params_error(resize_target, 1000, 2000, width=4000, height=None, mode="fit")
    assert "would be 8000 px high; the limit is 4096 px a side" in message
    assert resize_target(1000, 2000, width=2048, height=None, mode="fit") == (2048, 4096)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"width": 0}, "width: must be a whole number of pixels from 1 to 4096; got 0"),
        ({"width": True}, "width: must be a whole number of pixels from 1 to 4096; got True"),
        ({"width": 10, "mode": "zoom"}, "mode: must be one of fit, fill, exact; got 'zoom'"),
        ({"width": 10, "mode": "fill"}, "height: mode fill needs both width and height"),
        ({"mode": "fit"}, "width: give width and/or height (1 to 4096 px)"),
        ({"width": 10, "depth": 3}, "depth: unknown parameter (accepted: width, height, mode)"),
    ],
)
def test_bad_resize_parameters_name_the_field_and_range(
    params: dict[str, Any], expected: str
) -> None:
    assert params_error(validate_resize_params, params) == expected


def test_resize_parameters_are_normalised() -> None:
    assert validate_resize_params({"width": "800"}) == {"width": 800, "height": None, "mode": "fit"}
    assert validate_resize_params({"width": 8, "height": 9, "mode": "EXACT"})["mode"] == "exact"


# ---- convert -------------------------------------------------------------------------------


def test_jpeg_flattens_transparency_onto_the_chosen_background() -> None:
    im = Image.new("RGBA", (16, 16), (0, 0, 255, 0))  # invisible blue
    im.paste((0, 255, 0, 255), (0, 0, 8, 16))
    data, ctype = convert(im, format="jpeg", quality=95, background="#ff0000")
    assert ctype == "image/jpeg"
    out = decode(data)
    assert (out.format, out.mode) == ("JPEG", "RGB")
    right = out.getpixel((13, 8))
    left = out.getpixel((2, 8))
    assert isinstance(right, tuple) and right[0] > 240 and right[2] < 20
    assert isinstance(left, tuple) and left[1] > 240


def test_png_and_webp_keep_alpha() -> None:
    im = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    im.paste((200, 100, 50, 128), (0, 0, 4, 8))
    png, ctype = convert(im, format="png")
    assert ctype == "image/png" and decode(png).getpixel((1, 1)) == (200, 100, 50, 128)
    webp, ctype = convert(im, format="webp", quality=80)
    assert ctype == "image/webp"
    out = decode(webp)
    assert out.mode == "RGBA" and out.getpixel((6, 1))[3] == 0  # type: ignore[index]


def test_lossless_webp_round_trips_exactly() -> None:
    im = noise("RGBA", (32, 32))  # includes fully transparent pixels with colours
    data, _ = convert(im, format="webp", lossless=True)
    assert decode(data).convert("RGBA").tobytes() == im.tobytes()


def test_jpeg_quality_changes_the_size() -> None:
    im = noise("RGB", (64, 64))
    small, _ = convert(im, format="jpeg", quality=10)
    large, _ = convert(im, format="jpeg", quality=95)
    assert len(small) < len(large) / 2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"format": "webp", "quality": 0}, "quality: must be a whole number from 1 to 100; got 0"),
        (
            {"format": "webp", "quality": 101},
            "quality: must be a whole number from 1 to 100; got 101",
        ),
        ({"format": "gif"}, "format: must be one of png, jpeg, webp; got 'gif'"),
        ({"format": "jpeg", "lossless": True}, "lossless: only webp has a lossless mode, not jpeg"),
        (
            {"format": "jpeg", "background": "red"},
            "background: must be a colour like #ffffff or #fff; got 'red'",
        ),
        (
            {"format": "png", "dpi": 300},
            "dpi: unknown parameter (accepted: format, quality, lossless, background)",
        ),
    ],
)
def test_bad_convert_parameters_name_the_field_and_range(
    params: dict[str, Any], expected: str
) -> None:
    assert params_error(validate_convert_params, params) == expected


def test_convert_parameters_are_normalised() -> None:
    assert validate_convert_params({"format": "JPG", "background": "#F00"}) == {
        "format": "jpeg",
        "quality": 90,
        "lossless": False,
        "background": "#ff0000",
    }


def test_webp_refuses_a_side_beyond_what_libwebp_can_write() -> None:
    message = params_error(check_output_size, 20000, 100, {"format": "webp"})
    assert message == "format: webp images are at most 16383 px a side; this one is 20000×100"
    check_output_size(20000, 100, {"format": "png"})


def test_a_resize_job_produces_a_png_of_the_target_size() -> None:
    loaded = load_image(encode(Image.new("RGB", (640, 480), RED), "JPEG"))
    out = run_operation(loaded, "resize", {"width": 320, "mode": "fit"})
    assert (out.width, out.height, out.content_type, out.extension) == (
        320,
        240,
        "image/png",
        "png",
    )
    assert decode(out.data).size == (320, 240)


def test_an_unknown_operation_is_refused() -> None:
    loaded = load_image(encode(Image.new("RGB", (4, 4)), "PNG"))
    with pytest.raises(Exception, match="unknown media operation 'blur'"):
        run_operation(loaded, "blur", {})


@pytest.mark.parametrize(
    ("source", "scale", "fed"),
    [
        ((2560, 1707), 2, (2560, 1707)),  # phone photos fit as they are
        ((1280, 960), 4, (1280, 960)),
        ((4032, 3024), 2, (2581, 1936)),  # a camera photo sent as a file: reduced first
        ((2600, 2000), 4, (1274, 980)),
        ((100, 8000), 4, (25, 2048)),  # the side cap, not the megapixels, binds
    ],
)
def test_an_upscale_is_fed_a_source_whose_result_fits_the_caps(
    source: tuple[int, int], scale: int, fed: tuple[int, int]
) -> None:
    w, h = upscale_input_size(*source, scale)
    assert (w, h) == fed
    assert w * h * scale * scale <= UPSCALE_MAX_PIXELS
    assert max(w, h) * scale <= UPSCALE_MAX_SIDE
