"""A collection made entirely in Telegram, through the Bot API stand-in with the bot, workers and
dev stack all real: the guided creation, trait lines, a cook confirmed with its quote and
followed live (paused and resumed with the buttons), review with Approve/Reject buttons, and
the export zip arriving as a document."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import zipfile
from collections.abc import Iterator

import pytest

from adapters.jobs import JobsClient
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import Message, TelegramStandin, said
from tests.telegram.conftest import BotProcess, start_bot

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def bot(
    dev_stack: Stack, telegram_standin: TelegramStandin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotProcess]:
    """This module's bot, with the default limits: the story's ~20 taps and answers are flow
    steps, which have their own budget (handlers._flow_step), not the 20 commands a minute."""
    log_path = tmp_path_factory.mktemp("bot-collections") / "bot.log"
    proc = start_bot(dev_stack, telegram_standin, log_path)
    running = BotProcess(proc, telegram_standin)
    try:
        running.start()
        yield running
    finally:
        running.process.stop()


def message(tg: TelegramStandin, chat: int, message_id: int) -> Message:
    return next(m for m in tg.messages(chat) if m["message_id"] == message_id)


async def test_a_collection_is_designed_cooked_reviewed_and_exported_in_telegram(
    bot: BotProcess,
    telegram: TelegramStandin,
    jobs: JobsClient,
    dev_stack: Stack,
    user_id: int,
) -> None:
    tg, me = telegram, user_id
    tg.send(me, "/start")
    said(tg, me, "starter points")
    assert {"collections", "traits"} <= {c["command"] for c in tg.commands()}

    # Guided creation: name → description → master prompt → supply → each trait's lines.
    tg.send(me, "/collections")
    empty = said(tg, me, "no collections yet")
    tg.press(me, me, empty["message_id"], "coll:new")
    said(tg, me, "what is its name?")
    tg.send(me, "Foxes")
    said(tg, me, "(2/4)")
    tg.send(me, "sly foxes")
    said(tg, me, "(3/4)")
    tg.send(me, "a [[Fur]] fox [wearing [[Hat]]")
    assert "never closed" in said(tg, me, "Send the master prompt again")["text"]
    tg.send(me, "a [[Fur]] fox [wearing [[Hat]]] in the snow")
    said(tg, me, "(4/4)")
    tg.send(me, "4")
    created = said(tg, me, "✓ created Foxes")
    match = re.search(r"\((col[0-9a-f]{8})\)", created["text"])
    assert match, created["text"]
    cid = match.group(1)
    assert "values of [[Fur]]" in created["text"]
    tg.send(me, "red|red fur|3\ngrey|grey fur|1")
    said(tg, me, "values of [[Hat]]")
    tg.send(me, "top|a top hat|lots")
    refused = said(tg, me, "Send the values of [[Hat]] again")
    assert "rarity 'lots' is not a number" in refused["text"]
    tg.send(me, "top|a top hat|1\ncap|a cap|2")
    view = said(tg, me, "ready to cook")
    assert "[[Hat]]: top (1), cap (2)" in view["text"]
    col = await jobs.collection(cid, f"telegram:{me}")
    assert col.supply == 4 and col.description == "sly foxes"
    assert col.config.master_prompt == "a [[Fur]] fox [wearing [[Hat]]] in the snow"
    assert [t.name for t in col.config.traits] == ["Fur", "Hat"]

    # Cook: the confirm shows the total quote; nothing is charged before it is pressed.
    before = await asyncio.to_thread(jobs.stores.ledger.balance, f"telegram:{me}")
    tg.press(me, me, view["message_id"], f"coll:cook:{cid}")
    quote = await jobs.quote_cook(cid, f"telegram:{me}")
    asked = said(tg, me, "4 pieces ×")
    assert f"= {quote.total} points" in asked["text"] and quote.total == 4 * quote.piece_price
    assert await asyncio.to_thread(jobs.stores.ledger.balance, f"telegram:{me}") == before
    dev_stack.faults(render_time=1.0)  # slow enough to pause before the 4th piece starts
    try:
        tg.press(me, me, asked["message_id"], f"coll:go:{cid}")
        live_id = asked["message_id"]
        cooking = tg.wait_for_message(
            me, lambda m: m["message_id"] == live_id and "cooking 4 pieces" in (m["text"] or "")
        )
        assert f"coll:ctl:pause:{cid}" in cooking["buttons"]
        assert f"coll:ctl:cancel:{cid}" in cooking["buttons"]
        tg.press(me, me, live_id, f"coll:ctl:pause:{cid}")
        paused = tg.wait_for_message(
            me, lambda m: m["message_id"] == live_id and "paused:" in (m["text"] or "")
        )
        assert f"coll:ctl:resume:{cid}" in paused["buttons"]
        made = int(re.search(r"paused: (\d+) made", paused["text"]).group(1))  # type: ignore[union-attr]
        assert made < 4, paused["text"]
        tg.press(me, me, live_id, f"coll:ctl:resume:{cid}")
        done = tg.wait_for_message(
            me,
            lambda m: m["message_id"] == live_id and "done: 4 made" in (m["text"] or ""),
            timeout=40,
        )
    finally:
        dev_stack.reset_faults()
    assert f"coll:review:{cid}" in done["buttons"] and f"coll:export:{cid}" in done["buttons"]
    times = message(tg, me, live_id)["edit_times"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 3 and all(g >= 1.9 for g in gaps), gaps  # one edit per 2 s at most
    spent = before - await asyncio.to_thread(jobs.stores.ledger.balance, f"telegram:{me}")
    assert spent == quote.total

    # Review: four photos with Approve / Reject; approve 1-3, reject 4.
    tg.press(me, me, live_id, f"coll:review:{cid}")
    footer = said(tg, me, "piece(s) above to review")
    pieces = [m for m in tg.bot_messages(me) if m["photo"] and m["caption"]]
    by_number = {int(m["caption"].split()[0].lstrip("#")): m for m in pieces}
    assert sorted(by_number) == [1, 2, 3, 4]
    for n, m in by_number.items():
        verdict = "ok" if n < 4 else "no"
        assert f"coll:{verdict}:{cid}:{n}" in m["buttons"]
        tg.press(me, me, m["message_id"], f"coll:{verdict}:{cid}:{n}")
    tg.wait_for(
        me,
        lambda ms: (
            sum("✅ approved" in (m["caption"] or "") for m in ms) == 3
            and sum("✖ rejected" in (m["caption"] or "") for m in ms) == 1
        ),
    )
    states = {p.number: p.state for p in await jobs.collection_pieces(cid, f"telegram:{me}")}
    assert states == {1: "approved", 2: "approved", 3: "approved", 4: "rejected"}

    # Export: a document whose zip holds one metadata JSON per approved piece.
    tg.press(me, me, footer["message_id"], f"coll:export:{cid}")
    doc = tg.wait_for_message(me, lambda m: m["from_bot"] and m["document"], timeout=30)
    assert doc["document"]["file_name"].endswith(".zip")
    assert "3 approved pieces" in doc["caption"]
    with zipfile.ZipFile(io.BytesIO(tg.file(doc["document"]["file_id"]))) as zf:
        metas = sorted(n for n in zf.namelist() if n.startswith("metadata/"))
        assert metas == ["metadata/1.json", "metadata/2.json", "metadata/3.json"]
        for name in metas:
            meta = json.loads(zf.read(name))
            assert meta["description"] == "sly foxes"
            assert {a["trait_type"] for a in meta["attributes"]} <= {"Fur", "Hat"}
            assert meta["image"] in zf.namelist()


async def test_another_users_collection_reads_as_not_found_with_a_next_step(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    owner = f"telegram:{user_id + 1}"
    await jobs.register(owner)
    col = await jobs.create_collection(owner, "Secret", supply=1)
    telegram.send(user_id, "/start")
    said(telegram, user_id, "starter points")
    telegram.send(user_id, f"/traits {col.id} Hat")
    refused = said(telegram, user_id, "not found")
    assert "/collections lists yours" in refused["text"]
    assert "Traceback" not in refused["text"]
