"""The numbers docs/domain.md states, as examples."""

from __future__ import annotations

import pytest

from domain.pricing import family_base, partial_refund, quote_image, quote_media, quote_training
from domain.settings import limits_for, validate_setting


def test_a_1024_square_at_30_steps_costs_35() -> None:
    assert quote_image(1024, 1024, 30, 1, base=family_base("sdxl")) == 35


@pytest.mark.parametrize(
    ("w", "h", "steps", "batch", "family", "price"),
    [
        (1024, 1024, 30, 1, "flux", 45),
        (1024, 1024, 30, 2, "sdxl", 70),
        (512, 512, 20, 1, "sdxl", 15),
        (512, 512, 21, 1, "sdxl", 16),  # half a point rounds up
        (513, 512, 20, 1, "sdxl", 20),  # a started tile counts
    ],
)
def test_image_prices(w: int, h: int, steps: int, batch: int, family: str, price: int) -> None:
    assert quote_image(w, h, steps, batch, base=family_base(family)) == price


def test_media_and_training_prices() -> None:
    assert [quote_media(k) for k in ("upscale", "rmbg", "resize", "convert")] == [10, 10, 1, 1]
    assert quote_training(images=10, steps=1500) == 1000 + 500 + 300


@pytest.mark.parametrize(
    ("pixels", "price"),
    [
        (256 * 192, 10),  # a small upscale: the first megapixel is the base price
        (1_000_000, 10),
        (1_000_001, 12),  # a started megapixel counts
        (10_000_000, 28),
        (5120 * 3414, 44),  # a 2560x1707 phone photo at 2x
        (5120 * 3840, 48),  # a 1280x960 phone photo at 4x
    ],
)
def test_an_upscale_is_priced_by_the_megapixels_it_produces(pixels: int, price: int) -> None:
    assert quote_media("upscale", output_pixels=pixels) == price
    assert quote_media("rmbg", output_pixels=pixels) == 10, "only upscales scale with size"


def test_a_batch_that_made_some_images_refunds_the_failed_share() -> None:
    assert partial_refund(70, 2, 0) == 70
    assert partial_refund(70, 2, 1) == 35
    assert partial_refund(70, 2, 2) == 0


@pytest.mark.parametrize(
    ("points", "size", "batch", "steps"),
    [
        (0, 1024, 1, 30),
        (500, 1024, 1, 30),
        (1000, 1152, 1, 32),
        (2000, 1280, 2, 34),
        (9000, 2048, 5, 48),
        (10**6, 2048, 6, 48),
    ],
)
def test_limits_grow_with_the_balance(points: int, size: int, batch: int, steps: int) -> None:
    limits = limits_for(points)
    assert (limits.max_size, limits.max_batch, limits.max_steps) == (size, batch, steps)


def test_a_limit_error_says_it_comes_from_the_balance_and_what_would_allow_it() -> None:
    """The README's `make --batch 2` after a 1000-point grant (1485 left) used to say only
    "must be 1 … 1, got 2" (issue 15)."""
    with pytest.raises(ValueError) as caught:
        validate_setting("batch", 2, limits_for(1485))
    assert "batch 2 needs a balance of 2000 points; you have 1485" in str(caught.value)
    with pytest.raises(ValueError) as caught:
        validate_setting("width", 1280, limits_for(500))
    assert "width 1280 needs a balance of 2000 points; you have 500" in str(caught.value)
    with pytest.raises(ValueError) as caught:  # above the cap no balance helps: no promise
        validate_setting("batch", 9, limits_for(99_999))
    assert "balance" not in str(caught.value)
    validate_setting("batch", 2, limits_for(2000))  # exactly the balance it names
