"""Fault injection for reliability tests, steered at runtime over `/_standin/faults`.

A fault is chosen for a prompt when it is submitted (POST /prompt), so the order of submissions
alone decides which prompts fail; with a `seed` the fractional (`rate`) choices are repeatable.

Modes:
- `http_500`: POST /prompt answers a plain-text 500, queues nothing (no number used).
- `ws_drop`: the prompt's WebSocket (every socket when it has no client_id) is cut without a
  close frame when its first node starts; the run itself completes.
- `execution_error`: the first node that runs raises; a real §4 `execution_error` is sent and
  recorded in history.
- `hang`: the first node never finishes until /interrupt (→ `execution_interrupted`).
- `restart`: when the prompt starts, the server behaves as if restarted: queue, history and
  caches are emptied, the counter resets and every WebSocket is dropped.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FaultMode = Literal["http_500", "ws_drop", "execution_error", "hang", "restart"]
FAULT_MODES: tuple[FaultMode, ...] = ("http_500", "restart", "hang", "execution_error", "ws_drop")


class FaultRule(BaseModel):
    """Fail the next `next` prompts, then a fraction `rate` of the following ones."""

    model_config = ConfigDict(extra="forbid")

    next: int = Field(default=0, ge=0)
    rate: float = Field(default=0.0, ge=0.0, le=1.0)


class FaultUpdate(BaseModel):
    """Body of POST /_standin/faults; fields left out keep their current value."""

    model_config = ConfigDict(extra="forbid")

    faults: dict[FaultMode, FaultRule | None] | None = None
    seed: int | None = None
    step_delay: float | None = Field(default=None, ge=0.0)
    render_time: float | None = Field(default=None, ge=0.0)
    clear_render_time: bool = False
    train_step_delay: float | None = Field(default=None, ge=0.0)


class Faults:
    """Current fault rules plus the timing knobs (step delay, fixed render time)."""

    def __init__(self, step_delay: float = 0.0, train_step_delay: float = 0.005) -> None:
        self.default_step_delay = step_delay
        self.step_delay = step_delay
        # Seconds per TrainLoraNode step (a real GPU: about a second per step).
        self.default_train_step_delay = train_step_delay
        self.train_step_delay = train_step_delay
        # Training steps executed since start (a retry that redoes steps shows here).
        self.train_steps_run = 0
        self.render_time: float | None = None
        self.rules: dict[str, FaultRule] = {}
        self.seed: int | None = None
        self._rng = random.Random()
        self.injected: dict[str, int] = {}

    def reset(self) -> None:
        """Back to no faults and the start-up step delay."""
        self.step_delay = self.default_step_delay
        self.train_step_delay = self.default_train_step_delay
        self.train_steps_run = 0
        self.render_time = None
        self.rules = {}
        self.seed = None
        self._rng = random.Random()
        self.injected = {}

    def update(self, change: FaultUpdate) -> None:
        if change.seed is not None:
            self.seed = change.seed
            self._rng = random.Random(change.seed)
        if change.step_delay is not None:
            self.step_delay = change.step_delay
        if change.train_step_delay is not None:
            self.train_step_delay = change.train_step_delay
        if change.clear_render_time:
            self.render_time = None
        if change.render_time is not None:
            self.render_time = change.render_time
        for mode, rule in (change.faults or {}).items():
            if rule is None or (rule.next == 0 and rule.rate == 0.0):
                self.rules.pop(mode, None)
            else:
                self.rules[mode] = rule

    def choose(self) -> str | None:
        """The fault for the prompt being submitted now, if any (consumes `next` counts)."""
        for mode in FAULT_MODES:
            rule = self.rules.get(mode)
            if rule is None:
                continue
            hit = False
            if rule.next > 0:
                rule.next -= 1
                hit = True
            elif rule.rate > 0.0 and self._rng.random() < rule.rate:
                hit = True
            if hit:
                self.injected[mode] = self.injected.get(mode, 0) + 1
                return mode
        return None

    def snapshot(self) -> dict[str, Any]:
        """GET /_standin/faults: the rules and knobs now in force, and what was injected."""
        return {
            "faults": {m: r.model_dump() for m, r in self.rules.items()},
            "seed": self.seed,
            "step_delay": self.step_delay,
            "render_time": self.render_time,
            "train_step_delay": self.train_step_delay,
            "train_steps_run": self.train_steps_run,
            "injected": dict(self.injected),
        }
