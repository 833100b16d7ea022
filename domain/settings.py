"""Per-user generation settings: defaults, validation, balance-based limits, clamping.

Validation is all-or-nothing: a bulk update either applies completely or raises one
`SettingsError` listing every bad field, so a user never ends up with half a change.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.errors import FieldError, SettingsError
from domain.prompts import strip_controls
from domain.rules import DEFAULT_RULES, DomainRules, LimitRules

DEFAULT_SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "ddim")
DEFAULT_SCHEDULERS = ("normal", "karras", "exponential", "simple", "sgm_uniform", "beta")


class UserSettings(BaseModel):
    """What a user has saved; every field has the docs/domain.md default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = 1024
    height: int = 1024
    steps: int = 30
    cfg: float = 7.0
    strength: float = 0.6
    batch: int = 1
    seed: int = -1
    sampler: str = "euler"
    scheduler: str = "normal"
    checkpoint: str = ""  # empty = the template's default
    negative: str = ""
    template: str = "make"
    send_as_file: bool = False
    # Plain text in a private chat is a paid prompt: ask first (one tap, with the price),
    # unless the user turned that off.
    confirm_text_prompts: bool = True


SETTING_NAMES: tuple[str, ...] = tuple(UserSettings.model_fields)


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_size: int
    max_batch: int
    max_steps: int
    balance: int = 0  # the balance these limits were computed from (for the error text)


class Clamp(BaseModel):
    """One saved value that was lowered to fit the user's current limits."""

    model_config = ConfigDict(frozen=True)

    field: str
    saved: int
    used: int

    def __str__(self) -> str:
        return f"{self.field} {self.saved} → {self.used} (limit for your balance)"


def limits_for(points: int, rules: LimitRules = DEFAULT_RULES.limits) -> Limits:
    """Limits grow with the balance (docs/domain.md "Settings")."""
    tiers = max(0, points) // rules.per_points
    return Limits(
        max_size=min(rules.base_size + rules.size_step * tiers, rules.size_cap),
        max_batch=min(rules.base_batch + max(0, points) // rules.batch_per_points, rules.batch_cap),
        max_steps=min(rules.base_steps + rules.steps_step * tiers, rules.steps_cap),
        balance=max(0, points),
    )


def balance_needed(field: str, value: int, rules: LimitRules = DEFAULT_RULES.limits) -> int | None:
    """The balance at which `value` of a balance-limited setting becomes allowed; None if no
    balance allows it (above the cap) or the field is not balance-limited."""
    if field in ("width", "height"):
        base, step, cap, per = rules.base_size, rules.size_step, rules.size_cap, rules.per_points
    elif field == "steps":
        base, step, cap, per = rules.base_steps, rules.steps_step, rules.steps_cap, rules.per_points
    elif field == "batch":
        base, step, cap, per = rules.base_batch, 1, rules.batch_cap, rules.batch_per_points
    else:
        return None
    if value > cap:
        return None
    return max(0, -(-(value - base) // step)) * per


def _over_limit(field: str, value: int, limits: Limits, rules: LimitRules, top: int) -> str:
    """Why a value above the balance-based limit is refused, and what would allow it."""
    needed = balance_needed(field, value, rules)
    if needed is None or needed <= limits.balance:
        return ""
    return (
        f": the limit comes from your balance — {field} {value} needs a balance of {needed} "
        f"points; you have {limits.balance} (up to {top} now)"
    )


def _as_int(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError("must be a whole number")
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
    raise ValueError(f"must be a whole number, got {type(value).__name__}")


def _as_float(field: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        f = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise ValueError("must be a finite number")
    return f


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be yes or no, got {value!r}")


def validate_setting(
    field: str,
    value: Any,
    limits: Limits,
    *,
    rules: DomainRules = DEFAULT_RULES,
    samplers: Collection[str] = DEFAULT_SAMPLERS,
    schedulers: Collection[str] = DEFAULT_SCHEDULERS,
    templates: Collection[str] | None = None,
    checkpoints: Collection[str] | None = None,
    group_chat: bool = False,
) -> Any:
    """Return `value` converted to the field's type, or raise ValueError saying what is allowed."""
    r = rules.ranges
    if field in ("width", "height"):
        v = _as_int(field, value)
        if not r.min_size <= v <= limits.max_size:
            why = _over_limit(field, v, limits, rules.limits, limits.max_size)
            raise ValueError(f"must be {r.min_size} … {limits.max_size}, got {v}{why}")
        if v % r.size_multiple:
            raise ValueError(f"must be a multiple of {r.size_multiple}, got {v}")
        return v
    if field == "steps":
        v = _as_int(field, value)
        if not 1 <= v <= limits.max_steps:
            why = _over_limit(field, v, limits, rules.limits, limits.max_steps)
            raise ValueError(f"must be 1 … {limits.max_steps}, got {v}{why}")
        return v
    if field == "batch":
        v = _as_int(field, value)
        top = 1 if group_chat else limits.max_batch
        if not 1 <= v <= top:
            where = " in group chats" if group_chat else ""
            why = "" if group_chat else _over_limit(field, v, limits, rules.limits, top)
            raise ValueError(f"must be 1 … {top}{where}, got {v}{why}")
        return v
    if field == "seed":
        v = _as_int(field, value)
        if v != -1 and not 0 <= v <= r.seed_max:
            raise ValueError(f"must be -1 (random) or 0 … {r.seed_max}, got {v}")
        return v
    if field == "cfg":
        f = _as_float(field, value)
        if not 0 <= f <= r.cfg_max:
            raise ValueError(f"must be 0 … {r.cfg_max:g}, got {f:g}")
        if round(f, 1) != f:
            raise ValueError(f"must have at most one decimal, got {f:g}")
        return f
    if field == "strength":
        f = _as_float(field, value)
        if not 0 <= f <= 1:
            raise ValueError(f"must be 0 … 1, got {f:g}")
        return f
    if field == "sampler":
        return _choice(value, samplers)
    if field == "scheduler":
        return _choice(value, schedulers)
    if field == "template":
        return _choice(value, templates) if templates is not None else _text(value, 64)
    if field == "checkpoint":
        s = _text(value, 200)
        if s and checkpoints is not None and s not in checkpoints:
            # `checkpoints` holds the choices of the template's family only (never the
            # server's whole list): see domain/checkpoints.py.
            raise ValueError(
                f"{s!r} cannot be used with your template "
                f"(its checkpoints: {', '.join(sorted(checkpoints)) or 'none known'})"
            )
        return s
    if field == "negative":
        s = strip_controls(_text(value, None))  # the prompt's own cleaning: same graph, text
        if len(s) > r.negative_max_chars:
            raise ValueError(f"must be at most {r.negative_max_chars} characters, got {len(s)}")
        return s
    if field in ("send_as_file", "confirm_text_prompts"):
        return _as_bool(value)
    raise ValueError(f"unknown setting (known: {', '.join(SETTING_NAMES)})")


def _text(value: Any, max_len: int | None) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {type(value).__name__}")
    s = value.strip()
    if max_len is not None and len(s) > max_len:
        raise ValueError(f"must be at most {max_len} characters")
    return s


def _choice(value: Any, options: Collection[str]) -> str:
    s = _text(value, 200)
    if s not in options:
        raise ValueError(f"{s!r} is not one of {', '.join(sorted(options))}")
    return s


def apply_updates(
    current: UserSettings,
    updates: Mapping[str, Any],
    limits: Limits,
    **context: Any,
) -> UserSettings:
    """Validate every update, then apply all of them — or raise listing every bad field."""
    errors: list[FieldError] = []
    clean: dict[str, Any] = {}
    for field, value in updates.items():
        try:
            clean[field] = validate_setting(field, value, limits, **context)
        except ValueError as e:
            errors.append(FieldError(field, str(e)))
    if errors:
        raise SettingsError(errors)
    return current.model_copy(update=clean)


def reset_settings() -> UserSettings:
    """Defaults again; balance, history and models are kept by the caller."""
    return UserSettings()


def clamp_to_limits(settings: UserSettings, limits: Limits) -> tuple[UserSettings, list[Clamp]]:
    """Lower saved values the user's balance no longer allows, and say which."""
    clamps: list[Clamp] = []
    update: dict[str, int] = {}
    for field, cap in (
        ("width", limits.max_size),
        ("height", limits.max_size),
        ("steps", limits.max_steps),
        ("batch", limits.max_batch),
    ):
        saved = int(getattr(settings, field))
        if saved > cap:
            clamps.append(Clamp(field=field, saved=saved, used=cap))
            update[field] = cap
    return settings.model_copy(update=update), clamps
