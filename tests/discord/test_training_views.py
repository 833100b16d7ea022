"""The /train and /models buttons fit Discord's limits and are matched back by their templates,
without a stack: custom ids of at most 100 characters, never truncated; at most 5 rows of 5."""

from __future__ import annotations

import re
from typing import Any

from bson import ObjectId

from adapters.discord.training import (
    MODEL_TEMPLATE,
    TRAIN_TEMPLATE,
    dataset_view,
    models_view,
    quote_view,
)
from domain.training import Dataset, DatasetImage, LoraModel


def model(n: int, public: bool = False) -> LoraModel:
    return LoraModel(
        id=str(ObjectId()),
        name=f"model-{n}",
        owner="u",
        trigger_word=f"zz{n:04d}",
        blob_id=str(ObjectId()),
        filename="m.safetensors",
        public=public,
    )


def ids(view: Any) -> list[str]:
    return [item.custom_id for item in view.children]


async def test_models_pages_stay_within_five_rows_of_five_and_every_id_matches() -> None:
    own = [model(n, public=n % 2 == 0) for n in range(9)]
    added = [model(100 + n, public=True) for n in range(3)]
    seen: set[str] = set()
    for page in range(3):
        view = models_view(own, added, page)
        rows = [item.row or 0 for item in view.children]
        assert max(rows) <= 4 and len(view.children) <= 25
        assert all(rows.count(r) <= 5 for r in set(rows))
        for cid in ids(view):
            assert len(cid) <= 100 and re.fullmatch(MODEL_TEMPLATE, cid), cid
        seen |= set(ids(view))
    everyone = {m.id for m in [*own, *added]}
    assert everyone == {
        cid.split(":")[2] for cid in seen if cid.count(":") == 2 and ":p" not in cid
    }, "all listed"
    assert f"md:rm:{added[0].id}" in seen and f"md:priv:{own[0].id}" in seen


async def test_train_buttons_carry_the_dataset_and_steps_and_match_their_template() -> None:
    ds = Dataset(
        id=str(ObjectId()),
        owner="u",
        name="rex",
        trigger_word="zxrex",
        images=[
            DatasetImage(image_id=str(ObjectId()), original_id=str(ObjectId())) for _ in range(4)
        ],
    )
    card = dataset_view(ds)
    assert card is not None and ids(card) == [f"tr:cap:{ds.id}", f"tr:quote:{ds.id}:1500"]
    quote = quote_view(ds.id, 5000, 99999)
    assert ids(quote)[0] == f"tr:go:{ds.id}:5000"
    for cid in ids(card) + ids(quote):
        assert len(cid) <= 100 and re.fullmatch(TRAIN_TEMPLATE, cid), cid
    assert not re.fullmatch(TRAIN_TEMPLATE, f"tr:go:{ds.id}:50000")
    assert not re.fullmatch(TRAIN_TEMPLATE, "tr:go:../../x:1")
    too_few = ds.model_copy(update={"images": ds.images[:2], "trigger_word": ""})
    assert ids(dataset_view(too_few) or quote_view(ds.id, 1, 1)) == [f"tr:cap:{ds.id}"]


class _Response:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []

    def is_done(self) -> bool:
        return bool(self.sent)

    async def send_message(self, text: str, *, ephemeral: bool = False, **_: Any) -> None:
        self.sent.append((text, ephemeral))

    async def defer(self, **_: Any) -> None:  # pragma: no cover - must not be reached
        raise AssertionError("deferred: the photos were going to be read")


class _NoJobs:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the jobs client was called ({name})")


async def test_photos_over_the_batch_limit_are_refused_before_any_is_read() -> None:
    """Each under the per-photo limit, together over what one run holds in memory: refused
    from Discord's metadata, nothing downloaded, the jobs client never called."""
    from types import SimpleNamespace

    from adapters.discord.commands import DiscordCommands
    from adapters.discord.training import MAX_ATTACHMENT, MAX_BATCH, DiscordTraining

    each = MAX_ATTACHMENT - 1
    count = MAX_BATCH // each + 1
    photos: list[Any] = [
        SimpleNamespace(filename=f"p{n}.png", size=each, content_type="image/png")
        for n in range(count)
    ]
    response = _Response()
    interaction: Any = SimpleNamespace(guild_id=None, response=response)
    training = DiscordTraining(_NoJobs(), DiscordCommands(_NoJobs()))
    await training.train(interaction, "big", None, None, None, photos)
    [(text, ephemeral)] = response.sent
    assert ephemeral and "MB together" in text and "Nothing was added or charged" in text
