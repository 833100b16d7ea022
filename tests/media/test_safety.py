"""Accepting an image: every entry point passes user bytes through `media.safety.load_image`.

The corpus is generated (tests/media/corpus.py): each refusal must name the limit it hit, and
each accepted mode must come out upright, RGB or RGBA, with sane pixel values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from media.safety import (
    DECODE_CEILING,
    BadImage,
    ImageLimits,
    LoadedImage,
    load_image,
    normalised_png,
)
from tests.media.corpus import (
    animated_gif,
    crafted_png,
    decode,
    encode,
    halves,
    jpeg_with_orientation,
    noise,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def close(actual: object, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    """A pixel within `tolerance` of `expected` per channel (lossy formats drift a little)."""
    assert isinstance(actual, tuple), actual
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def refusal(data: bytes, limits: ImageLimits | None = None) -> str:
    with pytest.raises(BadImage) as caught:
        load_image(data, limits) if limits else load_image(data)
    assert caught.value.code == "bad_image"
    return caught.value.message


# ---- refusals ------------------------------------------------------------------------------


def test_pillow_bomb_limit_is_set_deliberately_to_the_product_limit() -> None:
    assert Image.MAX_IMAGE_PIXELS == DECODE_CEILING == 40_000_000
    with pytest.raises(ValueError, match="decode ceiling"):
        ImageLimits(max_pixels=DECODE_CEILING + 1)


def test_a_file_over_20_mb_is_refused_before_decoding() -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"\0" * (21 * 1024 * 1024)
    assert refusal(data) == "the image is 21.0 MB; the limit is 20 MB"


def test_an_image_over_40_megapixels_is_refused_from_its_header() -> None:
    data = crafted_png(8000, 6000)  # 48 MP: Pillow only warns; the warning is a refusal
    assert len(data) < 5_000
    assert refusal(data) == "the image is 8000×6000 = 48.0 megapixels; the limit is 40"


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    data = crafted_png(100_000, 100_000)  # 10 gigapixels in a 1 KB file
    assert len(data) < 5_000
    message = refusal(data)
    assert "10000.0 megapixels" in message
    assert "the limit is 40 megapixels" in message
    assert "decompression bomb" in message


def test_a_lower_limit_names_its_own_value() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    limits = ImageLimits(max_pixels=5_000)
    assert refusal(data, limits) == "the image is 100×100 = 0.0 megapixels; the limit is 0.005"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_file_is_refused(fmt: str) -> None:
    data = encode(noise("RGB", (64, 64)), fmt)
    message = refusal(data[: len(data) // 2])
    assert message.startswith(f"the {fmt} image is truncated or corrupt")


def test_a_corrupt_png_is_refused() -> None:
    data = bytearray(encode(noise("RGB", (32, 32)), "PNG"))
    data[60:80] = b"\xff" * 20  # inside the compressed pixels
    assert "truncated or corrupt" in refusal(bytes(data))


def test_a_text_file_named_png_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_text("hello, I am definitely a cat picture\n")
    message = refusal(path.read_bytes())
    assert "not an image" in message
    assert "looks like a text file" in message
    assert "accepted formats: PNG, JPEG, WEBP, GIF, BMP, TIFF" in message


def test_an_icon_file_is_refused_naming_the_accepted_formats() -> None:
    data = encode(Image.new("RGBA", (32, 32), (*RED, 255)), "ICO")
    message = refusal(data)
    assert "ICO icon" in message
    assert "accepted formats: PNG, JPEG, WEBP, GIF, BMP, TIFF" in message


def test_a_photoshop_file_is_refused() -> None:
    assert "Photoshop PSD" in refusal(b"8BPS\x00\x01" + b"\0" * 64)


def test_an_empty_file_is_refused() -> None:
    assert refusal(b"") == "the file is empty"


# ---- accepted images -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_each_accepted_format_is_sniffed_from_its_bytes(fmt: str) -> None:
    loaded = load_image(encode(Image.new("RGB", (30, 20), BLUE), fmt))
    assert (loaded.format, loaded.width, loaded.height) == (fmt, 30, 20)
    assert loaded.image.mode == "RGB"
    assert close(loaded.image.getpixel((15, 10)), BLUE)


def test_the_smallest_and_the_largest_side_are_accepted() -> None:
    tiny = load_image(encode(Image.new("RGB", (1, 1), RED), "PNG"))
    assert (tiny.width, tiny.height) == (1, 1)
    big = load_image(encode(Image.new("RGB", (4096, 4096), GREEN), "PNG"))
    assert (big.width, big.height) == (4096, 4096)
    assert big.image.getpixel((4095, 4095)) == GREEN


def test_an_animated_gif_gives_its_first_frame_and_says_so() -> None:
    loaded = load_image(animated_gif([RED, GREEN, BLUE]))
    assert loaded.frames == 3
    assert "used the first of 3 frames" in loaded.note
    assert close(loaded.image.getpixel((8, 8)), RED)


@pytest.mark.parametrize(("fmt", "sniffed"), [("PNG", "PNG"), ("WEBP", "WEBP"), ("MPO", "JPEG")])
def test_other_multi_frame_images_give_their_first_frame(fmt: str, sniffed: str) -> None:
    first, second = Image.new("RGB", (20, 10), RED), Image.new("RGB", (20, 10), BLUE)
    loaded = load_image(encode(first, fmt, save_all=True, append_images=[second]))
    assert (loaded.format, loaded.frames) == (sniffed, 2)
    assert loaded.note == "used the first of 2 frames"
    assert close(loaded.image.getpixel((5, 5)), RED)


def test_a_phone_photo_on_its_side_comes_out_upright() -> None:
    # Stored 40 wide × 20 high, left half red; orientation 6 = "rotate 90° clockwise to view".
    data = jpeg_with_orientation(halves((40, 20), RED, BLUE), 6)
    loaded = load_image(data)
    assert (loaded.width, loaded.height) == (20, 40)
    assert close(loaded.image.getpixel((10, 5)), RED, 40)
    assert close(loaded.image.getpixel((10, 35)), BLUE, 40)
    assert "applied EXIF orientation 6" in loaded.note
    # The stored source carries no EXIF any more, so nothing rotates it a second time.
    assert "exif" not in decode(normalised_png(loaded)).info


def test_rgba_keeps_its_alpha() -> None:
    im = Image.new("RGBA", (8, 8), (10, 20, 30, 40))
    loaded = load_image(encode(im, "PNG"))
    assert loaded.has_alpha and loaded.image.mode == "RGBA"
    assert loaded.image.getpixel((0, 0)) == (10, 20, 30, 40)


def test_a_palette_image_with_a_transparent_entry_becomes_rgba() -> None:
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(0, (0, 0, 4, 8))
    loaded = load_image(encode(im, "PNG", transparency=0))
    assert (loaded.original_mode, loaded.image.mode) == ("P", "RGBA")
    assert loaded.image.getpixel((1, 1))[3] == 0  # type: ignore[index]
    assert loaded.image.getpixel((6, 1)) == (255, 0, 0, 255)


def test_a_palette_image_without_transparency_becomes_rgb() -> None:
    loaded = load_image(encode(Image.new("RGB", (8, 8), RED).quantize(4), "PNG"))
    assert (loaded.original_mode, loaded.image.mode, loaded.has_alpha) == ("P", "RGB", False)
    assert loaded.image.getpixel((3, 3)) == RED


def test_an_rgb_png_with_a_transparent_colour_key_becomes_rgba() -> None:
    im = halves((8, 4), RED, GREEN)
    loaded = load_image(encode(im, "PNG", transparency=RED))
    assert loaded.has_alpha
    assert loaded.image.getpixel((1, 1)) == (*RED, 0)
    assert loaded.image.getpixel((6, 1)) == (*GREEN, 255)


def test_a_lab_tiff_goes_through_a_colour_transform() -> None:
    loaded = load_image(encode(Image.new("LAB", (4, 4), (128, 128, 128)), "TIFF"))
    assert (loaded.original_mode, loaded.image.mode) == ("LAB", "RGB")
    assert close(loaded.image.getpixel((1, 1)), (119, 119, 119), 4)  # L* 50 = sRGB grey 119


def test_a_cmyk_jpeg_becomes_rgb_with_the_right_colour() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    loaded = load_image(data)
    assert (loaded.original_mode, loaded.image.mode) == ("CMYK", "RGB")
    assert close(loaded.image.getpixel((8, 8)), RED, 20)


def test_a_16_bit_png_is_scaled_not_clipped_to_white() -> None:
    im = Image.new("I;16", (4, 1))
    for x, value in enumerate((0, 128 * 257, 200 * 257, 65535)):
        im.putpixel((x, 0), value)
    loaded = load_image(encode(im, "PNG"))
    assert loaded.original_mode == "I;16"
    assert loaded.image.mode == "RGB"
    got = [loaded.image.getpixel((x, 0)) for x in range(4)]
    assert got == [(0, 0, 0), (128, 128, 128), (200, 200, 200), (255, 255, 255)]


def test_a_float_tiff_in_0_to_1_is_scaled() -> None:
    im = Image.new("F", (2, 1))
    im.putpixel((0, 0), 0.0)
    im.putpixel((1, 0), 0.5)
    loaded = load_image(encode(im, "TIFF"))
    assert loaded.original_mode == "F"
    assert close(loaded.image.getpixel((1, 0)), (128, 128, 128), 1)


@pytest.mark.parametrize(
    ("mode", "colour", "expected_mode", "expected"),
    [
        ("L", 77, "RGB", (77, 77, 77)),
        ("LA", (77, 100), "RGBA", (77, 77, 77, 100)),
        ("1", 1, "RGB", (255, 255, 255)),
    ],
)
def test_grayscale_and_1_bit_images_become_rgb_or_rgba(
    mode: str, colour: int | tuple[int, int], expected_mode: str, expected: tuple[int, ...]
) -> None:
    loaded = load_image(encode(Image.new(mode, (4, 4), colour), "PNG"))
    assert (loaded.original_mode, loaded.image.mode) == (mode, expected_mode)
    assert loaded.image.getpixel((2, 2)) == expected
    assert loaded.has_alpha is (expected_mode == "RGBA")


def test_the_normalised_source_is_a_png_of_the_loaded_pixels() -> None:
    loaded = load_image(encode(Image.new("LA", (5, 3), (90, 200)), "PNG"))
    im = decode(normalised_png(loaded))
    assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (5, 3))
    assert im.getpixel((0, 0)) == (90, 90, 90, 200)


def test_loaded_image_reports_what_it_holds() -> None:
    loaded = load_image(encode(Image.new("RGB", (3, 2)), "BMP"))
    assert loaded == LoadedImage(
        image=loaded.image, format="BMP", width=3, height=2, frames=1, original_mode="RGB"
    )


def test_the_size_limit_applies_to_the_normalised_png_too() -> None:
    """A JPEG under the limit can become a PNG far over it (13 MB → 113 MB in issue 13): the
    PNG that would be stored is refused with a message that says so."""
    jpeg = encode(noise("RGB", (400, 300)), "JPEG")
    png_size = len(normalised_png(load_image(jpeg)))
    limits = ImageLimits(max_bytes=(len(jpeg) + png_size) // 2)
    assert len(jpeg) < limits.max_bytes < png_size
    loaded = load_image(jpeg, limits)  # the file as sent passes
    with pytest.raises(BadImage) as caught:
        normalised_png(loaded, limits)
    assert "once converted to PNG" in caught.value.message
