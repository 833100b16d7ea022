"""The per-user rate gate in front of every handler (no stack): a /train photo album passes,
a flood of photos does not (issue 13, item 6: the photo step used to skip the limit)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from telegram import Update
from telegram.ext import ApplicationHandlerStop

from adapters.telegram import handlers as h
from adapters.telegram.ratelimit import RateLimiter
from domain.training import MAX_IMAGES

USER = 5472638766


def photo_update(n: int) -> Update:
    return Update.de_json(
        {
            "update_id": n,
            "message": {
                "message_id": n,
                "date": 1,
                "chat": {"id": USER, "type": "private"},
                "from": {"id": USER, "is_bot": False, "first_name": "A"},
                "photo": [{"file_id": f"f{n}", "file_unique_id": f"u{n}", "width": 9, "height": 9}],
            },
        },
        None,
    )


class Answered(Exception):
    """The gate tried to answer: the update was refused politely."""


def context(deps: h.BotDeps, step: str | None) -> Any:
    user_data = {"train_flow": {"step": step}} if step else {}
    app = SimpleNamespace(bot_data={"deps": deps})
    return SimpleNamespace(application=app, bot_data=app.bot_data, user_data=user_data)


async def passes(ctx: Any, n: int, monkeypatch: pytest.MonkeyPatch) -> bool:
    async def refuse(*_: Any, **__: Any) -> None:
        return None

    monkeypatch.setattr(h, "answer", refuse)
    try:
        await h.rate_gate(photo_update(n), ctx)
    except ApplicationHandlerStop:
        return False
    return True


async def test_a_train_album_passes_but_a_flood_of_photos_is_limited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deps = h.BotDeps(
        jobs=cast(Any, None),
        config=cast(Any, None),
        watchers=cast(Any, None),
        limiter=RateLimiter(5, 60.0),
    )
    ctx = context(deps, "photos")
    results = [await passes(ctx, n, monkeypatch) for n in range(1, 101)]
    assert all(results[:MAX_IMAGES]), "a whole dataset's album is not limited"
    assert results.count(True) == 2 * MAX_IMAGES, "beyond the photo budget, photos are refused"
    # The command budget is its own: photos did not use it up.
    assert deps.limiter.check(f"telegram:{USER}") == 0


async def test_photos_outside_the_train_flow_use_the_command_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deps = h.BotDeps(
        jobs=cast(Any, None),
        config=cast(Any, None),
        watchers=cast(Any, None),
        limiter=RateLimiter(5, 60.0),
    )
    results = [await passes(context(deps, None), n, monkeypatch) for n in range(1, 11)]
    assert results.count(True) == 5
