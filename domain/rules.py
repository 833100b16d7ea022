"""The numbers of docs/domain.md, gathered so they can come from configuration instead of code."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class LimitRules(BaseModel):
    """Balance-based limits: each grows by a step per `per_points` of balance, up to a cap."""

    model_config = ConfigDict(frozen=True)

    base_size: int = 1024
    size_step: int = 128
    size_cap: int = 2048
    base_batch: int = 1
    batch_per_points: int = 2000
    batch_cap: int = 6
    base_steps: int = 30
    steps_step: int = 2
    steps_cap: int = 48
    per_points: int = 1000


class PriceRules(BaseModel):
    model_config = ConfigDict(frozen=True)

    base_sdxl: int = 10
    base_flux: int = 20
    per_megatile: int = 5  # per started 512x512 tile
    per_extra_step: float = 0.5  # per step above free_steps
    free_steps: int = 20
    upscale: int = 10  # an upscale whose result is at most 1 megapixel
    upscale_per_megapixel: int = 2  # per started megapixel of the result beyond the first
    rmbg: int = 10
    resize: int = 1
    convert: int = 1
    train_base: int = 1000
    train_per_image: int = 50
    train_per_100_steps: int = 20


class SettingRanges(BaseModel):
    model_config = ConfigDict(frozen=True)

    min_size: int = 256
    size_multiple: int = 8
    cfg_max: float = 30.0
    seed_max: int = 2**32 - 1
    negative_max_chars: int = 1000
    prompt_max_chars: int = 2000


class DomainRules(BaseModel):
    """All rule numbers in one value, passed down from configuration."""

    model_config = ConfigDict(frozen=True)

    limits: LimitRules = LimitRules()
    prices: PriceRules = PriceRules()
    ranges: SettingRanges = SettingRanges()
    starter_grant: int = 500
    max_running_jobs: int = 3


DEFAULT_RULES = DomainRules()
