"""/train and /models on Discord, with the bot, workers and dev stack all real and the user
acting through the Discord stand-in: a LoRA trained from attached photos (captions quoted and
paid, the training quoted, started once however often Train is tapped or the event replayed,
its live status, the result naming the model and its trigger word), the /models buttons and
modals, and the adversary cases (another user's dataset and model ids, /train in a guild,
over-size and non-image attachments)."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import pytest
from PIL import Image

from adapters.discord.training import NAME_INPUT, NOT_YOUR_DATASET, NOT_YOUR_MODEL
from adapters.jobs import JobsClient
from domain.pricing import quote_training
from domain.training import CAPTION_PRICE_PER_IMAGE
from tests.discord.conftest import DiscordBot
from tests.discord.test_stories import answer_of
from tests.discord_standin.standin import DiscordStandin, Message
from tests.fixtures.devstack import Stack

pytestmark = pytest.mark.stack


def photo(n: int) -> bytes:
    """A small photo, different for each n (so each is a new dataset image)."""
    buf = io.BytesIO()
    img = Image.new("RGB", (320, 240), (40 * n, 120, 200 - 30 * n))
    img.paste((250, 240 - 50 * n, 20), (20 * n, 30, 20 * n + 120, 150))
    img.save(buf, "PNG")
    return buf.getvalue()


def photos(count: int, first: int = 0) -> dict[str, tuple[str, bytes] | tuple[str, bytes, str]]:
    return {
        f"photo{i + 1}": (f"me-{first + i}.png", photo(first + i), "image/png")
        for i in range(count)
    }


async def balance(jobs: JobsClient, who: str) -> int:
    return await asyncio.to_thread(jobs.stores.ledger.balance, who)


async def charges(jobs: JobsClient, who: str) -> list[Any]:
    return [e for e in (await jobs.balance_summary(who, 50))[1] if e.kind == "charge"]


async def newest(sd: DiscordStandin, channel: str, text: str, timeout: float = 30) -> Message:
    """The newest bot message in `channel` containing `text` (done loading)."""

    async def found() -> Message | None:
        for m in reversed(await sd.messages(channel)):
            if m["from_bot"] and not m["loading"] and text in m["content"]:
                return m
        return None

    result: Message = await sd.wait_for(found, timeout, repr(text))
    return result


async def start_user(jobs: JobsClient, sd: DiscordStandin, user_id: int, points: int) -> str:
    who = f"discord:{user_id}"
    await answer_of(sd, await sd.invoke(user_id, "balance"))  # registered, starter points
    await jobs.grant(who, points, by="test", key=f"test-dtrain-{user_id}")
    return who


async def new_dataset(
    sd: DiscordStandin, user_id: int, name: str, trigger: str, count: int = 4
) -> Message:
    sent = await sd.invoke(
        user_id, "train", {"name": name, "trigger": trigger}, files=photos(count), dm=True
    )
    card = await answer_of(sd, sent, timeout=60)
    assert f"{count} photo(s)" in card["content"], card["content"]
    names = [a["filename"] for a in card["attachments"]]
    assert names == [f"{name}-{n}.jpg" for n in range(1, count + 1)], "a preview of each"
    return card


async def test_a_user_trains_a_lora_from_attached_photos_and_is_charged_once(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    sd, me = discord_bot.standin, user_id
    who = await start_user(jobs, sd, me, 3000)
    commands = {c["name"]: c for c in await sd.commands()}
    assert commands["train"]["contexts"] == [1], "DM-only"
    name, trigger = f"rex-{uuid.uuid4().hex[:6]}", f"zx{uuid.uuid4().hex[:5]}"

    # Photos as attachments: the card shows them, the trigger word and the next step.
    card = await new_dataset(sd, me, name, trigger)
    ds = await jobs.dataset(who, name)
    assert len(ds.images) == 4 and ds.trigger_word == trigger
    assert trigger in card["content"] and card["ephemeral"] is False
    assert card["custom_ids"] == [f"tr:cap:{ds.id}", f"tr:quote:{ds.id}:1500"]
    dm = card["channel_id"]

    # Caption: quoted first, charged per photo by the caption job once confirmed.
    before = await balance(jobs, who)
    quote = await answer_of(sd, await sd.press(me, card["id"], f"tr:cap:{ds.id}"))
    price = 4 * CAPTION_PRICE_PER_IMAGE
    assert f"Caption 4 photo(s) of {name} for {price} points" in quote["content"]
    assert await balance(jobs, who) == before, "nothing charged by a quote"
    taps = await asyncio.gather(
        *(sd.press(me, quote["id"], f"tr:capok:{ds.id}") for _ in range(2))
    )  # a double tap: one caption job
    answers = [await answer_of(sd, t, 60) for t in taps]
    assert sorted(a["content"] == "That was already started." for a in answers) == [False, True]
    [done] = [a for a in answers if "captioned" in a["content"]]
    assert f"captioned 4 photo(s) for {price} points" in done["content"], done["content"]
    assert await balance(jobs, who) == before - price
    ds = await jobs.dataset(who, name)
    assert all(trigger in im.caption for im in ds.images)
    assert ds.images[0].caption[:40] in done["content"]
    assert done["custom_ids"] == [f"tr:quote:{ds.id}:1500"]

    # Train: the quote (1500 steps), another step count edits it; nothing charged yet.
    quote = await answer_of(sd, await sd.press(me, done["id"], f"tr:quote:{ds.id}:1500"))
    assert f"{quote_training(4, 1500)} points" in quote["content"]
    assert f"tr:steps:{ds.id}:500" in quote["custom_ids"]
    await sd.press(me, quote["id"], f"tr:steps:{ds.id}:500")
    price = quote_training(4, 500)

    async def requoted() -> Message | None:
        msg = await sd.message(quote["id"])
        return msg if f"tr:go:{ds.id}:500" in msg["custom_ids"] else None

    quote = await sd.wait_for(requoted, 10, "the quote for 500 steps")
    assert f"{price} points" in quote["content"]
    before = await balance(jobs, who)
    charged = len(await charges(jobs, who))

    # Confirm, tapped twice at once: one job, its live status, then the result.
    dev_stack.faults(train_step_delay=0.02)  # 500 steps, a few seconds each chunk
    try:
        taps = await asyncio.gather(
            *(sd.press(me, quote["id"], f"tr:go:{ds.id}:500") for _ in range(2))
        )
        answers = [await answer_of(sd, t) for t in taps]
        [again] = [a for a in answers if a["ephemeral"]]
        assert again["content"] == "That was already started."
        [status_id] = [a["id"] for a in answers if not a["ephemeral"]]

        async def stepping() -> Message | None:
            msg = await sd.message(status_id)
            return msg if "· step " in msg["content"] else None

        live = await sd.wait_for(stepping, 60, "the live training status")
        assert "/500" in live["content"] and "%" in live["content"]
        assert any(c.startswith("st:cancel:") for c in live["custom_ids"])
        result = await newest(sd, dm, "is ready", timeout=90)
    finally:
        dev_stack.reset_faults()
    assert name in result["content"] and f"Trigger word: {trigger}" in result["content"]
    assert result["interaction_id"] is None, "delivered by deliver-discord, not the token"
    [model] = await jobs.models(who, include_public=False)
    assert (model.name, model.trigger_word) == (name, trigger)
    assert await balance(jobs, who) == before - price
    assert len(await charges(jobs, who)) == charged + 1, "two taps, charged once"
    trains = [j for j in await jobs.list_jobs(user=who, limit=20) if j.kind == "train"]
    assert len(trains) == 1, trains


async def test_a_typed_caption_then_a_replayed_train_press_starts_one_job(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    """The gateway replays the Train press's INTERACTION_CREATE (same id, same token): the
    bot answers nothing twice and starts, and charges, one training."""
    sd, me = discord_bot.standin, user_id
    who = await start_user(jobs, sd, me, 3000)
    name = f"rep-{uuid.uuid4().hex[:6]}"
    card = await new_dataset(sd, me, name, f"zq{uuid.uuid4().hex[:5]}")
    ds = await jobs.dataset(who, name)
    for i in (1, 3, 4):  # typed captions: nothing to pay for captioning
        await jobs.set_caption(who, ds.id, i, f"{ds.trigger_word} photo {i}")
    typed = f"{ds.trigger_word} a red square on a blue wall"
    options = {"name": name, "caption_number": 2, "caption": typed}
    card = await answer_of(sd, await sd.invoke(me, "train", options, dm=True))
    assert "✓ caption #2 saved" in card["content"] and typed in card["content"]
    ds = await jobs.dataset(who, name)
    assert ds.images[1].caption == typed and ds.images[1].caption_source == "user"
    assert card["custom_ids"] == [f"tr:quote:{ds.id}:1500"], "all captioned: no Caption button"
    quote = await answer_of(sd, await sd.press(me, card["id"], f"tr:quote:{ds.id}:1500"))
    await sd.press(me, quote["id"], f"tr:steps:{ds.id}:500")
    await sd.wait_for(lambda: _has(sd, quote["id"], f"tr:go:{ds.id}:500"), 10, "the 500-step quote")
    before = await balance(jobs, who)
    dev_stack.faults(train_step_delay=0.02)
    try:
        tap = await sd.press(me, quote["id"], f"tr:go:{ds.id}:500")
        await sd.wait_for(lambda: _acked(sd, tap), 10, "the press answered")
        for _ in range(2):
            await sd.redeliver(tap["interaction_id"])
        await newest(sd, tap["channel_id"], "is ready", timeout=90)
    finally:
        dev_stack.reset_faults()
    trains = [j for j in await jobs.list_jobs(user=who, limit=20) if j.kind == "train"]
    assert len(trains) == 1, trains
    assert await balance(jobs, who) == before - quote_training(4, 500)


async def _has(sd: DiscordStandin, message_id: str, custom_id: str) -> bool:
    return custom_id in (await sd.message(message_id))["custom_ids"]


async def _acked(sd: DiscordStandin, sent: dict[str, Any]) -> bool:
    return bool((await sd.interaction(sent["interaction_id"]))["acked"])


async def test_train_is_refused_in_a_guild_and_bad_attachments_charge_nothing(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    sd, me = discord_bot.standin, user_id
    who = await start_user(jobs, sd, me, 100)
    before = await balance(jobs, who)

    # Discord does not offer /train in a guild; a modified client sending it anyway is refused.
    with pytest.raises(AssertionError, match="not offered in guilds"):
        await sd.invoke(me, "train", {"name": "guildset"})
    forged = await answer_of(sd, await sd.invoke(me, "train", {"name": "guildset"}, forge=True))
    assert forged["ephemeral"] is True and "DM" in forged["content"]

    # A file that is no image, one over the size limit, one that only claims to be a PNG.
    text = {"photo1": ("notes.txt", b"just some notes", "text/plain")}
    refused = await answer_of(
        sd, await sd.invoke(me, "train", {"name": "bad"}, files=text, dm=True)
    )
    assert "notes.txt (photo1) is not an image" in refused["content"]
    big = {"photo1": ("huge.png", b"\x89PNG" + b"\0" * (21 * 1024 * 1024), "image/png")}
    refused = await answer_of(sd, await sd.invoke(me, "train", {"name": "bad"}, files=big, dm=True))
    assert "huge.png (photo1) is 21.0 MB" in refused["content"], refused["content"]
    assert refused["ephemeral"] is True
    fake = {
        "photo1": ("ok.png", photo(1), "image/png"),
        "photo2": ("fake.png", b"not really a png", "image/png"),
    }
    refused = await answer_of(
        sd, await sd.invoke(me, "train", {"name": "fakes"}, files=fake, dm=True), 30
    )
    assert "fake.png" in refused["content"] and "Nothing was charged" in refused["content"]
    assert (await jobs.dataset(who, "fakes")).images == [], "refused whole: nothing added"
    assert [d.name for d in await jobs.datasets(who)] == ["fakes"]
    assert await balance(jobs, who) == before


async def test_another_users_dataset_and_model_ids_start_nothing(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    sd, owner, mallory = discord_bot.standin, user_id, user_id + 1
    who = await start_user(jobs, sd, owner, 3000)
    thief = await start_user(jobs, sd, mallory, 3000)
    card = await new_dataset(sd, owner, f"own-{uuid.uuid4().hex[:6]}", f"zo{uuid.uuid4().hex[:5]}")
    ds = await jobs.datasets(who)
    [ds_id] = [d.id for d in ds]
    mine = await new_dataset(sd, mallory, f"mal-{uuid.uuid4().hex[:6]}", "zmallory")
    before = (await balance(jobs, who), await balance(jobs, thief))

    # The owner's real buttons pressed by mallory (a modified client on the owner's message).
    for cid in card["custom_ids"]:
        answer = await answer_of(sd, await sd.press(mallory, card["id"], cid, forge=True))
        assert answer["content"] == NOT_YOUR_DATASET and answer["ephemeral"] is True
    # And the buttons of the owner's caption and training quotes (Caption, Train for N).
    cap = await answer_of(sd, await sd.press(owner, card["id"], f"tr:cap:{ds_id}"))
    quote = await answer_of(sd, await sd.press(owner, card["id"], f"tr:quote:{ds_id}:1500"))
    for msg, cid in ((cap, f"tr:capok:{ds_id}"), (quote, f"tr:go:{ds_id}:1500")):
        answer = await answer_of(sd, await sd.press(mallory, msg["id"], cid, forge=True))
        assert answer["content"] == NOT_YOUR_DATASET and answer["ephemeral"] is True
    # The owner's ids forged onto mallory's own card: not on the message, never acted on.
    presses = [
        await sd.press(mallory, mine["id"], f"tr:{a}:{ds_id}{s}", forge=True)
        for a, s in (("go", ":500"), ("capok", ""), ("cap", ""))
    ]
    await asyncio.sleep(2.0)
    for press in presses:
        assert (await sd.interaction(press["interaction_id"]))["acked"] is False
    assert (await balance(jobs, who), await balance(jobs, thief)) == before
    assert await jobs.active(thief) == [] and await jobs.active(who) == []

    # A model of the owner's: mallory's forged rename, delete and publish change nothing.
    model = await _a_model(jobs, who, ds_id)
    listing = await answer_of(sd, await sd.invoke(owner, "models"))
    assert listing["ephemeral"] is True and listing["visible_to"] == str(owner)
    assert f"md:del:{model}" in listing["custom_ids"]
    for cid in (f"md:del:{model}", f"md:pub:{model}", f"md:ren:{model}"):
        answer = await answer_of(sd, await sd.press(mallory, listing["id"], cid, forge=True))
        assert answer["content"] == NOT_YOUR_MODEL, (cid, answer["content"])
    await sd.press(owner, listing["id"], f"md:del:{model}")  # the owner is asked to confirm
    await sd.wait_for(lambda: _has(sd, listing["id"], f"md:delok:{model}"), 10, "the confirm")
    press = await sd.press(mallory, listing["id"], f"md:delok:{model}", forge=True)
    assert (await answer_of(sd, press))["content"] == NOT_YOUR_MODEL
    opened = await sd.invoke(mallory, "models")
    await answer_of(sd, opened)
    submit = await sd.submit(
        mallory,
        opened["interaction_id"],
        {NAME_INPUT: "stolen"},
        custom_id=f"md:ren:{model}",
        forge=True,
    )
    answer = await answer_of(sd, submit)
    assert answer["content"] == NOT_YOUR_MODEL and answer["ephemeral"] is True
    [kept] = await jobs.models(who, include_public=False)
    assert (kept.id, kept.public) == (model, False) and not kept.name.startswith("stolen")


async def _a_model(jobs: JobsClient, who: str, ds_id: str) -> str:
    """A trained model of `who`'s, stored directly (the story above trains one for real)."""
    from bson import ObjectId

    from domain.training import LoraModel

    owner = await jobs.user(who)
    model = LoraModel(
        name=f"m-{uuid.uuid4().hex[:6]}",
        owner=owner.id,
        trigger_word=f"zm{uuid.uuid4().hex[:5]}",
        blob_id=str(ObjectId()),
        filename="m.safetensors",
        dataset_id=ds_id,
    )
    return (await asyncio.to_thread(jobs.stores.models.create, model)).id


async def test_models_buttons_rename_publish_add_remove_and_delete(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    sd, me, other = discord_bot.standin, user_id, user_id + 1
    who = await start_user(jobs, sd, me, 100)
    them = await start_user(jobs, sd, other, 100)
    mine = await _a_model(jobs, who, "")
    theirs = await _a_model(jobs, them, "")
    their_name = (await jobs.models(them, include_public=False))[0].name
    await jobs.publish_model(them, theirs, True)

    listing = await answer_of(sd, await sd.invoke(me, "models"))
    assert listing["ephemeral"] is True
    assert listing["custom_ids"] == [
        f"md:ren:{mine}",
        f"md:del:{mine}",
        f"md:pub:{mine}",
        "md:add",
    ]

    # Publish edits the list in place.
    await sd.press(me, listing["id"], f"md:pub:{mine}")
    listing = await sd.wait_for(
        lambda: _shows(sd, listing["id"], "is public"), 10, "the published model"
    )
    assert f"md:priv:{mine}" in listing["custom_ids"]

    # Rename: a modal, then the list again with the new name.
    press = await sd.press(me, listing["id"], f"md:ren:{mine}")
    state = await sd.wait_for(lambda: _modal(sd, press), 10, "the rename modal")
    assert state["modal"]["custom_id"] == f"md:ren:{mine}"
    new_name = f"renamed-{uuid.uuid4().hex[:5]}"
    answer = await answer_of(
        sd, await sd.submit(me, press["interaction_id"], {NAME_INPUT: new_name})
    )
    assert f"renamed to {new_name}" in answer["content"] and answer["ephemeral"] is True
    assert (await jobs.models(who, include_public=False))[0].name == new_name

    # Add someone's public model by name, then remove it from the list.
    press = await sd.press(me, answer["id"], "md:add")
    await sd.wait_for(lambda: _modal(sd, press), 10, "the add modal")
    answer = await answer_of(
        sd, await sd.submit(me, press["interaction_id"], {NAME_INPUT: their_name})
    )
    assert f"added {their_name}" in answer["content"], answer["content"]
    assert f"md:rm:{theirs}" in answer["custom_ids"]
    await sd.press(me, answer["id"], f"md:rm:{theirs}")
    await sd.wait_for(lambda: _shows(sd, answer["id"], "off your list"), 10, "removed")
    assert await jobs.added_models(who) == []

    # Delete asks first; "No" keeps it, "Yes" deletes it.
    await sd.press(me, answer["id"], f"md:del:{mine}")
    asked = await sd.wait_for(lambda: _shows(sd, answer["id"], "cannot be undone"), 10, "ask")
    assert asked["custom_ids"] == [f"md:delok:{mine}", "md:list"]
    await sd.press(me, answer["id"], f"md:delok:{mine}")
    await sd.wait_for(lambda: _shows(sd, answer["id"], f"deleted {new_name}"), 10, "deleted")
    assert await jobs.models(who, include_public=False) == []


async def _shows(sd: DiscordStandin, message_id: str, text: str) -> Message | None:
    msg = await sd.message(message_id)
    return msg if text in msg["content"] else None


async def _modal(sd: DiscordStandin, sent: dict[str, Any]) -> dict[str, Any] | None:
    state = await sd.interaction(sent["interaction_id"])
    return state if state["modal"] else None


async def test_train_buttons_and_an_open_rename_form_work_after_a_bot_restart(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    """Buttons are matched by their custom id and a modal's submit is answered from its own
    custom id: a kill -9 of the bot loses neither (no view or modal kept in memory)."""
    sd, me = discord_bot.standin, user_id
    who = await start_user(jobs, sd, me, 100)
    name = f"rs-{uuid.uuid4().hex[:6]}"
    card = await new_dataset(sd, me, name, f"zr{uuid.uuid4().hex[:5]}")
    ds = await jobs.dataset(who, name)
    model = await _a_model(jobs, who, ds.id)
    listing = await answer_of(sd, await sd.invoke(me, "models"))
    opened = await sd.press(me, listing["id"], f"md:ren:{model}")
    await sd.wait_for(lambda: _modal(sd, opened), 10, "the rename modal")

    await asyncio.to_thread(discord_bot.restart)

    quote = await answer_of(sd, await sd.press(me, card["id"], f"tr:cap:{ds.id}"))
    assert f"Caption 4 photo(s) of {name}" in quote["content"]
    new_name = f"after-{uuid.uuid4().hex[:5]}"
    answer = await answer_of(
        sd, await sd.submit(me, opened["interaction_id"], {NAME_INPUT: new_name})
    )
    assert f"renamed to {new_name}" in answer["content"]
    assert (await jobs.models(who, include_public=False))[0].name == new_name


async def test_train_without_enough_points_is_refused_and_charges_nothing(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    sd, me = discord_bot.standin, user_id
    who = await start_user(jobs, sd, me, 1)
    name = f"poor-{uuid.uuid4().hex[:6]}"
    card = await new_dataset(sd, me, name, f"zp{uuid.uuid4().hex[:5]}")
    ds = await jobs.dataset(who, name)
    points = await balance(jobs, who)
    quote = await answer_of(sd, await sd.press(me, card["id"], f"tr:quote:{ds.id}:1500"))
    price = quote_training(4, 1500)
    assert price > points and f"You need {price - points} more points" in quote["content"]
    refused = await answer_of(sd, await sd.press(me, quote["id"], f"tr:go:{ds.id}:1500"))
    assert f"this job costs {price} points and the balance is {points}" in refused["content"]
    assert await balance(jobs, who) == points
    assert [j for j in await jobs.list_jobs(user=who, limit=20) if j.kind == "train"] == []
