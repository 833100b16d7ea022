"""The Discord bot's stories, with the bot, workers and dev stack all real and the user acting
through the Discord stand-in: make with live progress to an attachment; cancel mid-render with
a refund; a media job from an attachment; a button after a bot restart; an expired interaction
token; 429s on the status edits; the same person on Telegram and Discord."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import pytest
from PIL import Image
from temporalio.testing import ActivityEnvironment

from adapters.discord.delivery import DiscordDelivery
from adapters.jobs import JobsClient
from domain.jobs import DeliverInput, JobState, MakeImageRequest, ReplyTarget
from tests.discord.conftest import DiscordBot
from tests.discord_standin.standin import DiscordStandin, Message
from tests.fixtures.devstack import Stack

pytestmark = pytest.mark.stack

EDIT_ROUTE = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"


async def answer_of(sd: DiscordStandin, sent: dict[str, Any], timeout: float = 20) -> Message:
    """The interaction's original response once it is no longer "thinking"."""

    async def done() -> Message | None:
        state = await sd.interaction(sent["interaction_id"])
        if not state["original_id"]:
            return None
        msg = await sd.message(state["original_id"])
        return msg if not msg["loading"] else None

    result: Message = await sd.wait_for(done, timeout, "answer")
    return result


def job_messages(messages: list[Message], who: int) -> list[Message]:
    return [
        m
        for m in messages
        if m["from_bot"] and m["interaction_id"] is None and f"discord-{who}" in _names(m)
    ]


def _names(m: Message) -> str:
    return " ".join(a["filename"] for a in m["attachments"]) + " " + m["content"]


async def wait_results(
    sd: DiscordStandin, channel: int | str, who: int, n: int = 1, timeout: float = 60
) -> list[Message]:
    async def found() -> list[Message] | None:
        ms = [m for m in job_messages(await sd.messages(channel), who) if m["attachments"]]
        return ms if len(ms) >= n else None

    result: list[Message] = await sd.wait_for(found, timeout, f"{n} result(s)")
    return result


async def balance(jobs: JobsClient, who: str) -> int:
    return await asyncio.to_thread(jobs.stores.ledger.balance, who)


async def test_make_shows_live_progress_then_the_image_as_an_attachment(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    sd = discord_bot.standin
    dev_stack.faults(render_time=4)
    try:
        sent = await sd.invoke(user_id, "make", {"prompt": "a lighthouse at dusk"})
        [result] = await wait_results(sd, sd.channel_id, user_id)
    finally:
        dev_stack.reset_faults()
    status_id = (await sd.interaction(sent["interaction_id"]))["original_id"]

    async def settled() -> Message | None:
        msg = await sd.message(status_id)
        return msg if "delivering" in msg["content"] or "done" in msg["content"] else None

    status = await sd.wait_for(settled, 10, "the status to say the image is done")
    assert status["ephemeral"] is False and status["edits"] >= 3, status  # live, several steps
    assert len(await sd.calls(EDIT_ROUTE)) >= 3
    assert result["attachments"][0]["content_type"] == "image/png"
    data = await sd.attachment(result["attachments"][0]["id"])
    assert Image.open(io.BytesIO(data)).size[0] > 0
    ids = result["custom_ids"]
    assert [c.split(":")[1] for c in ids] == ["regen", "again", "up"]
    assert all(len(c) <= 100 for c in ids)
    assert "a lighthouse at dusk" in result["content"]


async def running(jobs: JobsClient, who: str) -> list[Any]:
    return [s for s in await jobs.active(who) if s.state is JobState.RUNNING]


async def test_cancel_mid_render_is_refunded_in_full(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    sd, who = discord_bot.standin, f"discord:{user_id}"
    dev_stack.faults(render_time=30)
    try:
        sent = await sd.invoke(user_id, "make", {"prompt": "a slow cathedral"})
        await sd.wait_for(lambda: running(jobs, who), 30, "a running render")
        before = await balance(jobs, who)
        status_id = (await sd.interaction(sent["interaction_id"]))["original_id"]

        async def cancel_button() -> str | None:
            ids = (await sd.message(status_id))["custom_ids"]
            return next((c for c in ids if c.startswith("st:cancel:")), None)

        cid = await sd.wait_for(cancel_button, 20, "a Cancel button under the status")
        press = await sd.press(user_id, status_id, cid)
        answer = await answer_of(sd, press)
        assert answer["ephemeral"] is True and "Cancelled, refunded" in answer["content"]
    finally:
        dev_stack.reset_faults()
    [job] = [j for j in await jobs.list_jobs(user=who, limit=5)]
    final = await jobs.result(job.workflow_id)
    assert final.state is JobState.CANCELLED and final.refund > 0
    assert await balance(jobs, who) == before + final.refund

    async def told() -> Message | None:
        return next(
            (
                m
                for m in await sd.messages()
                if m["from_bot"]
                and "cancelled" in m["content"]
                and m["interaction_id"] is None
                and str(final.refund) in m["content"]
            ),
            None,
        )

    await sd.wait_for(told, 30, "the cancelled job's message in the channel")


def png(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


async def test_upscale_of_an_attached_image_arrives_as_an_attachment_in_the_dm(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    sd = discord_bot.standin
    sent = await sd.invoke(
        user_id, "upscale", {"scale": 2}, files={"image": ("photo.png", png())}, dm=True
    )
    [result] = await wait_results(sd, sent["channel_id"], user_id, timeout=90)
    got = Image.open(io.BytesIO(await sd.attachment(result["attachments"][0]["id"])))
    assert got.size == (192, 128)
    assert [c.split(":")[1] for c in result["custom_ids"]] == ["up"]  # no Regen for media


def seed_of(message: Message) -> str:
    found = re.search(r"seed (\d+)", message["content"])
    assert found, message["content"]
    return found.group(1)


async def test_regen_button_after_a_bot_restart_runs_once_however_often_tapped(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    sd, who = discord_bot.standin, f"discord:{user_id}"
    await sd.invoke(user_id, "make", {"prompt": "a red fox in the snow"})
    [first] = await wait_results(sd, sd.channel_id, user_id)
    regen = next(c for c in first["custom_ids"] if c.startswith("st:regen:"))
    await asyncio.to_thread(discord_bot.restart)  # kill -9: the views' process is gone

    charges = len([e for e in (await jobs.balance_summary(who, 50))[1] if e.kind == "charge"])
    taps = await asyncio.gather(*(sd.press(user_id, first["id"], regen) for _ in range(3)))
    both = await wait_results(sd, sd.channel_id, user_id, n=2)
    assert seed_of(both[1]) == seed_of(first)  # Regen keeps the seed
    for tap in taps:
        await answer_of(sd, tap)  # every tap answered within Discord's 3 s
        assert (await sd.interaction(tap["interaction_id"]))["ack_after"] < 3.0
    await asyncio.sleep(2.0)
    assert len(job_messages(await sd.messages(), user_id)) == 2, "three taps, one job"
    entries = (await jobs.balance_summary(who, 50))[1]
    assert len([e for e in entries if e.kind == "charge"]) == charges + 1, "charged once"


async def test_a_status_outliving_its_interaction_token_continues_in_the_channel(
    discord_bot: DiscordBot, dev_stack: Stack, user_id: int
) -> None:
    sd = discord_bot.standin
    await sd.options(token_ttl=2.0)
    dev_stack.faults(render_time=6)
    try:
        sent = await sd.invoke(user_id, "make", {"prompt": "a long night"})
        [result] = await wait_results(sd, sd.channel_id, user_id)
    finally:
        dev_stack.reset_faults()
        await sd.options(token_ttl=900.0)
    state = await sd.interaction(sent["interaction_id"])
    assert state["followups"] == []
    status_id = int(state["original_id"])
    later = [
        m
        for m in await sd.messages()
        if m["from_bot"]
        and m["interaction_id"] is None
        and not m["attachments"]
        and int(m["id"]) > status_id
        and int(m["id"]) < int(result["id"])
    ]
    assert later, "the status went on in a channel message once the token expired"
    assert any("delivering" in m["content"] or "image:" in m["content"] for m in later)
    assert result["attachments"]


async def test_429s_on_status_edits_delay_the_status_but_lose_nothing(
    discord_bot: DiscordBot, dev_stack: Stack, user_id: int
) -> None:
    sd = discord_bot.standin
    dev_stack.faults(render_time=4)
    try:
        await sd.rate_limit(EDIT_ROUTE, count=2, retry_after=0.5, via=True)  # discord.py retries
        await sd.rate_limit(EDIT_ROUTE, count=2, retry_after=0.5, via=False)  # it raises: ours
        sent = await sd.invoke(user_id, "make", {"prompt": "a crowded harbour"})
        [result] = await wait_results(sd, sd.channel_id, user_id)
    finally:
        dev_stack.reset_faults()
    refused = [c for c in await sd.calls(EDIT_ROUTE) if c.get("status") == 429]
    assert len(refused) >= 2, refused
    status_id = (await sd.interaction(sent["interaction_id"]))["original_id"]

    async def settled() -> Message | None:
        msg = await sd.message(status_id)
        return msg if "delivering" in msg["content"] or "done" in msg["content"] else None

    await sd.wait_for(settled, 15, "the status to reach the end despite the 429s")
    assert result["attachments"]


async def test_the_same_person_on_telegram_and_discord_shares_points_and_jobs(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    sd = discord_bot.standin
    telegram = f"telegram:{user_id % 10**10}"
    await jobs.register(telegram)
    await jobs.grant(telegram, 500, by="test", key=f"discord-link-{user_id}")
    code = await jobs.link_code(telegram)

    linked = await answer_of(sd, await sd.invoke(user_id, "link", {"code": code}, dm=True))
    assert linked["ephemeral"] is True and "Linked" in linked["content"]
    shown = await answer_of(sd, await sd.invoke(user_id, "balance", dm=True))
    assert f"Balance: {await balance(jobs, telegram)} points" in shown["content"]

    dev_stack.faults(render_time=30)
    try:
        # The account's balance before the job: a cancelled job nets to zero (its charge may
        # still be on its way when Telegram first sees the job, so no reading in between).
        before = await balance(jobs, telegram)
        await sd.invoke(user_id, "make", {"prompt": "one account, two apps"})
        [job] = await sd.wait_for(lambda: jobs.active(telegram), 30, "the job seen from Telegram")
        assert job.workflow_id.startswith(f"make-discord-{user_id}-")
        cancelled = await jobs.cancel(job.workflow_id, reason="from telegram", user=telegram)
    finally:
        dev_stack.reset_faults()
    assert cancelled.refund > 0
    final = await jobs.result(job.workflow_id)
    assert final.state is JobState.CANCELLED
    assert await balance(jobs, telegram) == before
    # The code was spent: it links nothing else.
    again = await answer_of(sd, await sd.invoke(user_id + 7, "link", {"code": code}, dm=True))
    assert "Linked" not in again["content"]


async def test_a_result_for_a_channel_the_bot_cannot_reach_ends_done_not_delivered(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    """Discord refuses for good (404 Unknown Channel): not retried for an hour, the job ends
    done (the work was made and kept) and says it was not delivered."""
    who = f"discord:{user_id}"
    await jobs.register(who)
    started = await jobs.start_make(
        MakeImageRequest(
            user=who,
            platform="discord",
            prompt="a letter to nowhere",
            reply=ReplyTarget(chat_id="4242424242"),
            request_id="nowhere",
        )
    )
    final = await asyncio.wait_for(jobs.result(started.workflow_id), 60)
    assert final.state is JobState.DONE and final.outputs
    assert final.not_delivered, final
    assert await jobs.delivered_parts(started.workflow_id) == {}


async def test_each_result_part_is_sent_once_when_the_delivery_runs_again(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    """A delivery retried after a crash (the activity runs again) skips the parts recorded."""
    sd, who = discord_bot.standin, f"discord:{user_id}"
    await sd.invoke(user_id, "make", {"prompt": "sent exactly once"})
    [result] = await wait_results(sd, sd.channel_id, user_id)
    [job] = await jobs.list_jobs(user=who, limit=1)
    status = await jobs.result(job.workflow_id)  # delivered and recorded
    parts = await jobs.delivered_parts(job.workflow_id)
    assert parts == {"image:0": int(result["id"])}
    client = _RestOnly()
    delivery = DiscordDelivery(client, jobs)  # type: ignore[arg-type]
    again = DeliverInput(
        platform="discord", reply=ReplyTarget(chat_id=str(sd.channel_id)), status=status
    )
    await ActivityEnvironment().run(delivery.deliver_result, again)
    assert client.sent == [], "nothing sent a second time"


class _RestOnly:
    """A discord.Client stand-in that records sends (none expected)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def get_partial_messageable(self, channel_id: int) -> Any:
        outer = self

        class Channel:
            async def send(self, *args: Any, **kwargs: Any) -> Any:
                outer.sent.append((channel_id, args, kwargs))
                raise AssertionError("sent again")

        return Channel()


async def test_a_command_sent_while_the_gateway_socket_was_down_runs_after_the_resume(
    discord_bot: DiscordBot, user_id: int
) -> None:
    sd = discord_bot.standin
    await sd.drop(code=4000, hold=True)
    sent = await sd.invoke(user_id, "make", {"prompt": "through the storm"})
    assert sent["delivered"] is False  # queued in the session until the bot resumes
    await sd.release()
    [result] = await wait_results(sd, sd.channel_id, user_id)
    assert result["attachments"]
    assert any(s["resumes"] for s in (await sd.gateway())["sessions"])


async def test_a_guild_make_is_one_image_while_the_dm_keeps_the_users_batch(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    """Like Telegram groups: one member's batch of 4 does not flood a shared channel."""
    sd, who = discord_bot.standin, f"discord:{user_id}"
    await jobs.register(who)
    await jobs.grant(who, 3000, by="test", key=f"batch-{user_id}")
    await jobs.update_settings(who, {"batch": 2})
    await sd.invoke(user_id, "make", {"prompt": "twins"})
    guild = await wait_results(sd, sd.channel_id, user_id)
    sent = await sd.invoke(user_id, "make", {"prompt": "twins"}, dm=True)
    dm = await wait_results(sd, sent["channel_id"], user_id, n=2)
    await asyncio.sleep(1.0)
    assert len(guild) == 1 and len(job_messages(await sd.messages(), user_id)) == 1
    assert len(dm) == 2


class _Recording:
    """A discord.Client stand-in whose channels record what they are sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def get_partial_messageable(self, channel_id: int) -> Any:
        outer = self

        class Sent:
            id = 1000 + len(outer.sent)

        class Channel:
            async def send(self, content: str = "", **kwargs: Any) -> Any:
                outer.sent.append({"channel": channel_id, "content": content, **kwargs})
                return Sent()

        return Channel()


async def test_a_result_over_the_upload_limit_goes_as_a_link_not_a_refused_file(
    jobs: JobsClient, user_id: int
) -> None:
    who = f"discord:{user_id}"
    await jobs.register(who)
    started = await jobs.start_make(  # a pull job: nothing delivers it but this test
        MakeImageRequest(user=who, platform="cli", prompt="too big to attach", request_id="big")
    )
    status = await asyncio.wait_for(jobs.result(started.workflow_id), 60)
    client = _Recording()
    delivery = DiscordDelivery(client, jobs, upload_limit=100)  # type: ignore[arg-type]
    inp = DeliverInput(platform="discord", reply=ReplyTarget(chat_id="77"), status=status)
    await ActivityEnvironment().run(delivery.deliver_result, inp)
    [sent] = client.sent
    assert "file" not in sent and "over Discord's upload limit" in sent["content"]
    assert jobs.job_url(started.workflow_id) in sent["content"]
    assert sent["view"] is not None  # its buttons still come with it
    assert (await jobs.delivered_parts(started.workflow_id)) == {"image:0": 1000}


async def test_the_live_status_of_a_job_running_across_a_restart_goes_on_in_the_channel(
    discord_bot: DiscordBot, dev_stack: Stack, jobs: JobsClient, user_id: int
) -> None:
    sd, who = discord_bot.standin, f"discord:{user_id}"
    dev_stack.faults(render_time=20)
    try:
        sent = await sd.invoke(user_id, "make", {"prompt": "through a restart"})
        await sd.wait_for(lambda: running(jobs, who), 30, "a running render")
        first = int((await sd.interaction(sent["interaction_id"]))["original_id"])
        await asyncio.to_thread(discord_bot.restart)
        [result] = await wait_results(sd, sd.channel_id, user_id, timeout=90)
    finally:
        dev_stack.reset_faults()
    statuses = [
        m
        for m in await sd.messages()
        if m["from_bot"]
        and m["interaction_id"] is None
        and not m["attachments"]
        and m["content"].startswith(("⏳", "📤"))
        and first < int(m["id"]) < int(result["id"])
    ]
    assert statuses, "a new status message after the restart"
    # Its last edit is the render or the delivery, or (a loaded machine, the watcher's last
    # look) the job's end: in each case the status went on after the restart.
    assert any(w in statuses[-1]["content"] for w in ("rendering", "delivering", "done"))
    assert statuses[-1]["edits"] >= 1
