"""Discord /collections with the bot, workers and dev stack real, the user acting through the
Discord stand-in: a collection created, given traits and a prompt through modals (Telegram's
/traits format), cooked from its quote with a live public status, its pieces reviewed as
attachments and exported as a zip; and the adversary cases: another member's collection id
(as an option, behind real buttons of a public cook message, in forged custom ids), a double
tap of Confirm and a replayed Confirm starting one cook charged once."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
from typing import Any

import pytest

from adapters.jobs import JobsClient
from tests.discord.conftest import DiscordBot
from tests.discord.test_stories import answer_of
from tests.discord_standin.standin import DiscordStandin, Message
from tests.fixtures.devstack import Stack

pytestmark = pytest.mark.stack


def button(msg: Message, prefix: str) -> str:
    found = [c for c in msg["custom_ids"] if c.startswith(prefix)]
    assert found, (prefix, msg["custom_ids"], msg["content"])
    return found[0]


async def modal_answer(
    sd: DiscordStandin, user: int, message: Message, cid: str, values: dict[str, str]
) -> Message:
    """Press the button that opens a modal, fill it in, and read the answer to the submit."""
    press = await sd.press(user, message["id"], cid)

    async def opened() -> dict[str, Any] | None:
        state = await sd.interaction(press["interaction_id"])
        return state if state["ack_type"] == 9 else None

    state = await sd.wait_for(opened, 10, "the modal")
    assert state["modal"]["custom_id"].startswith("sc:m:"), state["modal"]
    sent = await sd.submit(user, press["interaction_id"], values)
    return await answer_of(sd, sent)


async def create_ready_collection(sd: DiscordStandin, me: int, name: str, supply: int) -> str:
    """/collections new → Traits modal (one bad line first) → Prompt modal; the collection id."""
    created = await answer_of(
        sd, await sd.invoke(me, "collections", {"new": name, "supply": supply})
    )
    assert created["ephemeral"] and f"✓ created {name}" in created["content"], created
    match = re.search(r"\((col[0-9a-f]{8})\)", created["content"])
    assert match, created["content"]
    cid = match.group(1)
    refused = await modal_answer(
        sd, me, created, f"sc:traits:{cid}", {"trait": "Fur", "values": "red|red fur|lots"}
    )
    assert "rarity 'lots' is not a number" in refused["content"], refused  # Telegram's parser
    traits = await modal_answer(
        sd, me, created, f"sc:traits:{cid}", {"trait": "Fur", "values": "red|red fur|3\ngrey"}
    )
    assert "✓ [[Fur]]: 2 values" in traits["content"], traits
    prompt = await modal_answer(
        sd, me, traits, f"sc:prompt:{cid}", {"prompt": "a [[Fur]] fox in the snow"}
    )
    assert "✓ master prompt set" in prompt["content"], prompt
    return cid


async def quote_message(sd: DiscordStandin, me: int, cid: str) -> Message:
    card = await answer_of(sd, await sd.invoke(me, "collections", {"open": cid}))
    return await answer_of(sd, await sd.press(me, card["id"], button(card, f"sc:cook:{cid}")))


async def charges(jobs: JobsClient, who: str) -> list[Any]:
    entries = (await jobs.balance_summary(who, 100))[1]
    return [e for e in entries if e.kind == "charge"]


async def test_a_collection_is_designed_cooked_live_reviewed_and_exported_on_discord(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    sd, me, who = discord_bot.standin, user_id, f"discord:{user_id}"
    cid = await create_ready_collection(sd, me, "Foxes", 2)
    col = await jobs.collection(cid, who)
    assert col.config.master_prompt == "a [[Fur]] fox in the snow"
    assert [(v.name, v.rarity) for v in col.config.traits[0].values] == [("red", 3), ("grey", 0.5)]

    quote = await quote_message(sd, me, cid)
    second_quote = await quote_message(sd, me, cid)  # Cook tapped twice: two quotes
    expected = await jobs.quote_cook(cid, who)
    assert quote["ephemeral"] and "2 pieces ×" in quote["content"], quote
    assert f"Cook for {expected.total} points" in str(quote["components"])
    before = await asyncio.to_thread(jobs.stores.ledger.balance, who)
    assert not await charges(jobs, who)  # nothing charged before Confirm

    dev_stack.faults(render_time=2.0)  # long enough for several status edits
    try:
        go = button(quote, f"sc:go:{cid}")
        taps = await asyncio.gather(*(sd.press(me, quote["id"], go) for _ in range(2)))
        await sd.redeliver(taps[0]["interaction_id"])  # the gateway replays one

        async def live() -> Message | None:
            for tap in taps:
                state = await sd.interaction(tap["interaction_id"])
                if state["original_id"]:
                    msg = await sd.message(state["original_id"])
                    if any(c.startswith("sc:stop:") for c in msg["custom_ids"]):
                        return msg
            return None

        await sd.wait_for(live, 30, "the live cook status")
        other = await answer_of(
            sd, await sd.press(me, second_quote["id"], button(second_quote, f"sc:go:{cid}"))
        )
        assert "cook of" in other["content"] and "already running" in other["content"], other

        async def status() -> Message | None:
            for tap in taps:
                state = await sd.interaction(tap["interaction_id"])
                if state["original_id"]:
                    msg = await sd.message(state["original_id"])
                    if "done:" in msg["content"]:
                        return msg
            return None

        done = await sd.wait_for(status, 90, "the cook's status to say done")
    finally:
        dev_stack.reset_faults()
    assert done["ephemeral"] is False and "done: 2 made" in done["content"], done
    assert done["edits"] >= 2, done  # live: cooking…, then done
    assert {button(done, f"sc:review:{cid}"), button(done, f"sc:export:{cid}")}
    col = await jobs.collection(cid, who)
    assert col.cooks == 1, "two taps and a replay: one cook"
    spent = before - await asyncio.to_thread(jobs.stores.ledger.balance, who)
    assert spent == expected.total and len(await charges(jobs, who)) == 2  # each piece once

    # Review: the two pieces as attachments only the owner sees, Approve / Reject under each.
    review = await sd.press(me, done["id"], button(done, f"sc:review:{cid}"))
    footer = await answer_of(sd, review)
    assert footer["ephemeral"] and "2 piece(s)" in footer["content"], footer

    async def pieces() -> list[Message] | None:
        state = await sd.interaction(review["interaction_id"])
        msgs = [await sd.message(m) for m in state["followups"]]
        shown = [m for m in msgs if m["attachments"]]
        return shown if len(shown) == 2 else None

    shown = await sd.wait_for(pieces, 30, "two pieces to review")
    for piece in shown:
        assert piece["ephemeral"] and piece["attachments"][0]["filename"].startswith(cid)
        n = int(piece["content"].split()[0].lstrip("#"))
        verdict = "ok" if n == 1 else "no"
        await sd.press(me, piece["id"], f"sc:{verdict}:{cid}:{n}")
    await sd.wait_for(
        lambda: _states(jobs, cid, who, {1: "approved", 2: "rejected"}), 20, "the verdicts"
    )

    # Export over the upload limit Discord gives this interaction: where to download it.
    await sd.options(upload_limit=200)
    try:
        big = await answer_of(sd, await sd.press(me, done["id"], button(done, f"sc:export:{cid}")))
    finally:
        await sd.options(upload_limit=10 * 1024 * 1024)
    assert "over Discord's upload limit" in big["content"] and not big["attachments"], big
    blob = re.search(r"/v1/outputs/([0-9a-f]{24})", big["content"])
    assert blob, big["content"]
    user = await jobs.user(who)
    kept = await asyncio.to_thread(jobs.stores.blobs.get_owned, blob.group(1), user.id)
    assert zipfile.is_zipfile(io.BytesIO(kept))

    # Export: the approved piece as a zip attachment.
    export = await answer_of(sd, await sd.press(me, done["id"], button(done, f"sc:export:{cid}")))
    assert export["ephemeral"] and "1 approved pieces" in export["content"], export
    [att] = export["attachments"]
    with zipfile.ZipFile(io.BytesIO(await sd.attachment(att["id"]))) as zf:
        assert any(n.endswith(".png") for n in zf.namelist()), zf.namelist()


async def _states(jobs: JobsClient, cid: str, who: str, want: dict[int, str]) -> bool | None:
    got = {p.number: str(p.state) for p in await jobs.collection_pieces(cid, who)}
    return True if all(got.get(n) == s for n, s in want.items()) else None


async def test_another_members_collection_is_not_found_however_it_is_named_and_cancel_cook(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    sd, owner, mallory = discord_bot.standin, user_id, user_id + 1
    cid = await create_ready_collection(sd, owner, "Mine", 2)

    # As a command option.
    said = await answer_of(sd, await sd.invoke(mallory, "collections", {"open": cid}))
    assert said["ephemeral"] and "not found" in said["content"], said

    # Forged custom ids naming the owner's collection on mallory's own card: discord.py acts
    # only on ids the pressed message has, so nothing is answered, quoted or started.
    own = await answer_of(sd, await sd.invoke(mallory, "collections", {"new": "Hers"}))
    forged = [
        await sd.press(mallory, own["id"], f"sc:{a}:{cid}", forge=True)
        for a in ("cook", "go", "export")
    ]
    await asyncio.sleep(2.0)
    for tap in forged:
        assert not (await sd.interaction(tap["interaction_id"]))["acked"]

    # The real buttons of the owner's public cook status, pressed by mallory: refused by the
    # service's owner check, and the owner's cook goes on.
    dev_stack.faults(render_time=8.0)  # the cook is still running when both tap Cancel
    try:
        quote = await quote_message(sd, owner, cid)
        tap = await sd.press(owner, quote["id"], button(quote, f"sc:go:{cid}"))

        async def live() -> Message | None:
            state = await sd.interaction(tap["interaction_id"])
            if not state["original_id"]:
                return None
            msg = await sd.message(state["original_id"])
            return msg if any(c.startswith("sc:stop:") for c in msg["custom_ids"]) else None

        status = await sd.wait_for(live, 30, "the live cook status")
        assert status["ephemeral"] is False
        refused = await answer_of(sd, await sd.press(mallory, status["id"], f"sc:stop:{cid}"))
        assert refused["ephemeral"] and "not found" in refused["content"], refused
        assert refused["visible_to"] == str(mallory)
        progress = await jobs.cook_progress(cid, f"discord:{owner}")
        assert progress.state.value == "running", progress  # mallory's tap did nothing

        # The owner's own Cancel cook on the same public message does cancel it.
        stopped = await answer_of(sd, await sd.press(owner, status["id"], f"sc:stop:{cid}"))
        assert stopped["ephemeral"] and "Cook cancelled" in stopped["content"], stopped
        final = await jobs.wait_cook(cid, f"discord:{owner}")
    finally:
        dev_stack.reset_faults()
    assert final.state.value == "cancelled"
    assert not await charges(jobs, f"discord:{mallory}")


async def test_a_cook_status_outliving_its_interaction_token_goes_on_in_the_channel(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    sd, me = discord_bot.standin, user_id
    cid = await create_ready_collection(sd, me, "Night", 2)
    quote = await quote_message(sd, me, cid)
    await sd.options(token_ttl=2.0)
    dev_stack.faults(render_time=4.0)
    try:
        tap = await sd.press(me, quote["id"], button(quote, f"sc:go:{cid}"))

        async def started() -> str | None:
            return (await jobs.collection(cid, f"discord:{me}")).last_cook

        await sd.wait_for(started, 20, "the cook to start")
        final = await jobs.wait_cook(cid, f"discord:{me}")

        async def in_channel() -> Message | None:
            for m in await sd.messages(sd.channel_id):
                if m["from_bot"] and m["interaction_id"] is None and "done: 2 made" in m["content"]:
                    return m
            return None

        moved = await sd.wait_for(in_channel, 20, "the cook status in a channel message")
    finally:
        dev_stack.reset_faults()
        await sd.options(token_ttl=900.0)
    assert final.made == 2
    assert button(moved, f"sc:review:{cid}") and button(moved, f"sc:export:{cid}")
    state = await sd.interaction(tap["interaction_id"])
    first = await sd.message(state["original_id"])
    assert "done" not in first["content"]  # the expired response kept its last text


async def test_a_traits_form_open_across_a_restart_works_and_a_forged_one_changes_nothing(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    """The collection forms are answered from their custom id (`sc:m:<form>:<id>`), not from a
    discord.py object in memory: a kill -9 of the bot between opening and submitting loses
    nothing; a modified client's submit naming another member's collection reaches the
    service's owner check and changes nothing."""
    sd, owner, mallory = discord_bot.standin, user_id, user_id + 1
    cid = await create_ready_collection(sd, owner, "Sleepy", 2)
    card = await answer_of(sd, await sd.invoke(owner, "collections", {"open": cid}))
    opened = await sd.press(owner, card["id"], button(card, f"sc:traits:{cid}"))

    async def shown() -> dict[str, Any] | None:
        state = await sd.interaction(opened["interaction_id"])
        return state if state["ack_type"] == 9 else None

    assert (await sd.wait_for(shown, 10, "the form"))["modal"]["custom_id"] == f"sc:m:traits:{cid}"
    await asyncio.to_thread(discord_bot.restart)
    saved = await answer_of(
        sd,
        await sd.submit(
            owner, opened["interaction_id"], {"trait": "Hat", "values": "cap\nbow|a bow|2"}
        ),
    )
    assert "✓ [[Hat]]: 2 values" in saved["content"], saved
    col = await jobs.collection(cid, f"discord:{owner}")
    assert [t.name for t in col.config.traits] == ["Fur", "Hat"]

    own = await sd.invoke(mallory, "collections")
    await answer_of(sd, own)
    forged = await answer_of(
        sd,
        await sd.submit(
            mallory,
            own["interaction_id"],
            {"prompt": "stolen [[Fur]]"},
            custom_id=f"sc:m:prompt:{cid}",
            forge=True,
        ),
    )
    assert forged["ephemeral"] and "not found" in forged["content"], forged
    kept = await jobs.collection(cid, f"discord:{owner}")
    assert kept.config.master_prompt == "a [[Fur]] fox in the snow"


async def test_a_running_cooks_status_goes_on_after_a_bot_restart(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    """kill -9 of the bot mid-cook: the interaction token died with it, so the restarted bot
    finds the cook by its start input (the channel it was confirmed in) and shows its status
    in a new channel message, live to the end, with Review and Export."""
    sd, me = discord_bot.standin, user_id
    cid = await create_ready_collection(sd, me, "Dawn", 2)
    quote = await quote_message(sd, me, cid)
    dev_stack.faults(render_time=5.0)  # still cooking after the restart
    try:
        await sd.press(me, quote["id"], button(quote, f"sc:go:{cid}"))

        async def started() -> str | None:
            return (await jobs.collection(cid, f"discord:{me}")).last_cook

        await sd.wait_for(started, 20, "the cook to start")
        await asyncio.to_thread(discord_bot.restart)

        async def in_channel() -> Message | None:
            for m in await sd.messages(sd.channel_id):
                if m["from_bot"] and m["interaction_id"] is None and "Dawn" in m["content"]:
                    return m if "done: 2 made" in m["content"] else None
            return None

        moved = await sd.wait_for(in_channel, 60, "the cook status after the restart")
    finally:
        dev_stack.reset_faults()
    assert moved["ephemeral"] is False and moved["edits"] >= 1, moved  # live, then done
    assert button(moved, f"sc:review:{cid}") and button(moved, f"sc:export:{cid}")
