"""Quotes: what a job costs, computed before it runs (docs/domain.md "Prices")."""

from __future__ import annotations

import math

from domain.rules import DEFAULT_RULES, PriceRules

FAMILY_BASE = {"sdxl": "base_sdxl", "sd15": "base_sdxl", "flux": "base_flux"}


def family_base(family: str, rules: PriceRules = DEFAULT_RULES.prices) -> int:
    return int(getattr(rules, FAMILY_BASE.get(family, "base_sdxl")))


def quote_image(
    width: int,
    height: int,
    steps: int,
    batch: int = 1,
    *,
    base: int,
    rules: PriceRules = DEFAULT_RULES.prices,
) -> int:
    """`base + ceil(w*h / 512²)*5 + max(0, steps−20)*0.5` per image, rounded up, times batch."""
    if min(width, height, steps, batch) < 1 or base < 0:
        raise ValueError("width, height, steps and batch must be positive")
    per_image = (
        base
        + math.ceil(width * height / (512 * 512)) * rules.per_megatile
        + max(0, steps - rules.free_steps) * rules.per_extra_step
    )
    return math.ceil(per_image) * batch


def per_image_price(total: int, batch: int) -> int:
    return total // max(1, batch)


def partial_refund(total: int, batch: int, produced: int) -> int:
    """Refund for a batch that produced `produced` of `batch` images: the share that failed."""
    if produced <= 0:
        return total
    if produced >= batch:
        return 0
    return total - per_image_price(total, batch) * produced


def quote_media(
    kind: str, rules: PriceRules = DEFAULT_RULES.prices, *, output_pixels: int = 0
) -> int:
    """The price of a media job. An upscale is priced by the megapixels it produces (the GPU
    works tile by tile, so its time grows with the result): `upscale` for the first started
    megapixel, `upscale_per_megapixel` for each further one — a 64×48 source at 4× costs 10,
    a 2560×1707 photo at 2× (17.5 MP) costs 10 + 17×2 = 44."""
    if kind == "upscale" and output_pixels > 0:
        started_mp = math.ceil(output_pixels / 1_000_000)
        return rules.upscale + rules.upscale_per_megapixel * max(0, started_mp - 1)
    prices = {
        "upscale": rules.upscale,
        "rmbg": rules.rmbg,
        "resize": rules.resize,
        "convert": rules.convert,
    }
    if kind not in prices:
        raise ValueError(f"unknown media job kind {kind!r}")
    return prices[kind]


def quote_training(images: int, steps: int, rules: PriceRules = DEFAULT_RULES.prices) -> int:
    return (
        rules.train_base
        + rules.train_per_image * images
        + rules.train_per_100_steps * (steps // 100)
    )
