"""Odd and malformed Telegram updates through the Bot API stand-in to the real bot process.

Each case comes from its own (registered) user, so whatever the bot says can be pinned on the
case. Every update must get no answer (noise, groups) or a polite one, never the generic
"something went wrong" apology (an unexpected exception in a handler) nor traceback text; no
case moves points; the bot keeps running, and a normal /make still delivers an image after.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.jobs import JobsClient
from domain.jobs import MakeImageRequest
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import TelegramStandin
from tests.fuzz import corpus
from tests.fuzz.tally import Tally
from tests.telegram.conftest import BotProcess, start_bot
from workers.config import REPO_ROOT
from workers.processes import ManagedProcess

pytestmark = [pytest.mark.stack, pytest.mark.slow]

APOLOGY = "something went wrong"
_READY = re.compile(r"^ready (http://\S+)$", re.MULTILINE)
_ids = itertools.count(int(time.time()) % 10**6 * 1000)


@pytest.fixture(scope="module")
def raw_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelegramStandin]:
    """The real stand-in with the fuzz-only `raw_update` route (tests/fuzz/standin_raw.py)."""
    log_path = tmp_path_factory.mktemp("fuzz-standin") / "standin.log"
    found: list[str] = []

    def health() -> None:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        match = _READY.search(text)
        if match is None:
            raise RuntimeError("no ready line yet")
        found[:] = [match.group(1)]

    proc = ManagedProcess(
        "telegram-standin-raw",
        [sys.executable, "-m", "tests.fuzz.standin_raw", "--port", "0"],
        health=health,
        log_path=log_path,
        cwd=REPO_ROOT,
        stop_timeout=5.0,
    )
    proc.start()
    try:
        proc.wait_ready(30.0)
        standin = TelegramStandin(found[0], process=proc)
        yield standin
        standin.close()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def fuzz_bot(
    dev_stack: Stack, raw_standin: TelegramStandin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotProcess]:
    log_path = tmp_path_factory.mktemp("fuzz-bot") / "bot.log"
    running = BotProcess(start_bot(dev_stack, raw_standin, log_path), raw_standin)
    try:
        running.start()
        yield running
    finally:
        running.process.stop()


@dataclass
class Case:
    label: str
    entry: str
    user: int
    chat: int
    expect: str | None = None  # a polite answer must contain this (lower case)
    callback_id: str | None = None
    sent: dict[str, Any] = field(default_factory=dict)


# A well-formed sticker; a malformed one is the case of
# test_an_update_the_library_cannot_parse_does_not_wedge_the_bot.
STICKER = {
    "file_id": "s1",
    "file_unique_id": "s1u",
    "width": 512,
    "height": 512,
    "is_animated": False,
    "is_video": False,
    "type": "regular",
}


def _user_json(uid: int) -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": f"Fuzz{uid}", "language_code": "en"}


def _chat_json(chat: int) -> dict[str, Any]:
    if chat > 0:
        return {"id": chat, "type": "private", "first_name": f"Fuzz{chat}"}
    return {"id": chat, "type": "group", "title": "Fuzz group"}


def _message(uid: int, chat: int, **body: Any) -> dict[str, Any]:
    return {
        "message_id": next(_ids) % 10**6 + 1,
        "date": int(time.time()),
        "chat": _chat_json(chat),
        "from": _user_json(uid),
        **body,
    }


def _bot_message(chat: int, text: str = "a message from the bot") -> dict[str, Any]:
    return {
        "message_id": 1,
        "date": int(time.time()),
        "chat": _chat_json(chat),
        "from": {"id": 1, "is_bot": True, "first_name": "StationThis"},
        "text": text,
    }


async def _raw(standin: TelegramStandin, update: dict[str, Any]) -> None:
    await standin._arequest("POST", "/_control/raw_update", {"update": update})


def _callback(uid: int, data: str) -> tuple[str, dict[str, Any]]:
    qid = f"fz{next(_ids)}"
    query: dict[str, Any] = {"id": qid, "from": _user_json(uid), "chat_instance": "1", "data": data}
    return qid, {"callback_query": query}


async def test_odd_updates_get_a_polite_answer_or_none_and_the_bot_survives(
    dev_stack: Stack,
    jobs: JobsClient,
    fuzz_bot: BotProcess,
    raw_standin: TelegramStandin,
    fuzz_tally: Tally,
) -> None:
    standin = raw_standin
    # Another user's job, for a cancel button pressed by someone else.
    owner = f"cli:fuzz-owner-{uuid.uuid4().hex[:6]}"
    await jobs.register(owner)
    theirs = await jobs.start_make(
        MakeImageRequest(
            user=owner, prompt="not yours", overrides={"width": 256, "height": 256, "steps": 2}
        )
    )
    their_output = (await jobs.result(theirs.workflow_id)).outputs[0].blob_id

    cases: list[Case] = []

    async def new_user() -> int:
        uid = 3 * 10**9 + next(_ids)
        await jobs.register(f"telegram:{uid}")
        return uid

    async def send(label: str, entry: str, expect: str | None = None, **kw: Any) -> None:
        uid = await new_user()
        chat = uid if kw.get("chat_type", "private") == "private" else -uid
        await standin.send_async(uid, **kw)
        cases.append(Case(label, entry, uid, chat, expect))

    async def raw(label: str, entry: str, build: Any, expect: str | None = None) -> None:
        uid = await new_user()
        update = build(uid)
        if "callback_query" in (update[1] if isinstance(update, tuple) else update):
            # Press on a real bot message (its /help answer), as a user would.
            await standin.send_async(uid, "/help")
            shown = await standin.wait_for_message_async(uid, lambda m: m["from_bot"])
            update[1]["callback_query"]["message"] = {
                **_bot_message(uid, shown["text"]),
                "message_id": shown["message_id"],
            }
        qid = None
        if isinstance(update, tuple):
            qid, update = update
        await _raw(standin, update)
        cases.append(Case(label, entry, uid, uid, expect, qid, update))

    long_prompt = "a fox " * 400  # 2400 characters
    # ---- text and commands -----------------------------------------------------------------
    for label, text, expect in [
        ("unknown command", "/nope", "i don't know"),
        ("unknown unicode command", "/ЁжикВТумане", "i don't know"),
        ("huge unknown command", "/" + "x" * 3000, "i don't know"),
        ("make with a 2400-char prompt", "/make " + long_prompt, "characters"),
        ("plain 4000-char prompt", "b" * 4000, "characters"),
        ("make with only control chars", "/make \u200b\u200b\u200b", None),
        ("set steps nan", "/set steps nan", "steps"),
        ("set width 1e400", "/set width 1e400", "width"),
        ("set cfg inf", "/set cfg inf", "cfg"),
        ("set seed huge", "/set seed 99999999999999999999999999", "seed"),
        ("set unknown key", "/set colour blue", "unknown setting"),
        ("set negative too long", "/set negative " + "n" * 1200, "negative"),
        ("set with nothing", "/set", "usage"),
        ("regen text", "/regen abc", "which run"),
        ("regen 0", "/regen 0", None),
        ("regen huge", "/regen 99999999999999999999", None),
        ("again without runs", "/again", "no runs"),
        ("resize without photo", "/resize 10 10", "send a photo"),
        ("grant by a non-admin", "/grant 1 100", "i don't know"),
        ("cancel with nothing running", "/cancel", None),
        ("status", "/status", None),
    ]:
        await send(label, "bot: text/commands", expect, text=text)
    # Groups: noise gets no answer; commands get a polite one.
    await send("group chatter", "bot: groups", None, text="hello all", chat_type="group")
    await send(
        "group make, long",
        "bot: groups",
        "characters",
        text="/make " + long_prompt,
        chat_type="group",
    )
    # Groups are shared: account details go to the private chat; anonymous admins and channel
    # senders are their chat (unknown here, so told to /start), never one shared user.
    await send(
        "group balance", "bot: groups", "private message", text="/balance", chat_type="group"
    )
    await send(
        "anonymous admin balance",
        "bot: groups",
        "/start",
        text="/balance",
        chat_type="supergroup",
        anonymous=True,
    )
    await send(
        "channel sender make",
        "bot: groups",
        "/start",
        text="/make a fox",
        chat_type="supergroup",
        sender_chat_id=-(10**13) - next(_ids),
    )

    # ---- photos and documents ----------------------------------------------------------------
    good: bytes = dict(corpus.odd_good_images())["palette png"]
    for label, data, caption, expect in [
        ("photo, huge caption", good, "/upscale " + "x" * 3000, "upscale by 2 or 4"),
        ("photo, unknown command caption", good, "/explode", "can't do"),
        ("photo, resize nonsense", good, "/resize a b", "new size"),
        ("photo, convert gif", good, "/convert gif", None),
        ("photo, no caption", good, None, "what should i do"),
    ]:
        await send(label, "bot: photos", expect, photo=data, caption=caption)
    bad_files = dict(corpus.bad_images(1, with_huge=False))
    for label, data, name, mime, expect in [
        ("zip as image/png", bad_files["zip"], "cat.png", "image/png", "not an image"),
        ("text as image/png", bad_files["text file"], "cat.png", "image/png", "not an image"),
        ("truncated png", bad_files["truncated png at 50%"], "t.png", "image/png", "truncated"),
        ("bomb png", bad_files["bomb 60000x60000 png"], "b.png", "image/png", "megapixels"),
        ("zero-size png", bad_files["zero width png"], "z.png", "image/png", None),
        ("pdf document", bad_files["pdf-ish"], "doc.pdf", "application/pdf", None),
        ("zip document", bad_files["zip"], "a.zip", "application/zip", None),
    ]:
        await send(
            label,
            "bot: documents",
            expect,
            document=data,
            filename=name,
            mime_type=mime,
            caption="/upscale 2",
        )

    # ---- raw updates: no text, odd kinds, odd callback data --------------------------------
    for label, build in [
        ("sticker, no text", lambda u: {"message": _message(u, u, sticker=STICKER)}),
        (
            "location",
            lambda u: {"message": _message(u, u, location={"latitude": 1.0, "longitude": 2.0})},
        ),
        ("empty message", lambda u: {"message": _message(u, u)}),
        (
            "no sender",
            lambda u: {
                "message": {
                    k: v for k, v in _message(u, u, text="/make a cat").items() if k != "from"
                }
            },
        ),
        (
            "edited make",
            lambda u: {"edited_message": _message(u, u, text="/make a cat", edit_date=1)},
        ),
        (
            "channel post",
            lambda u: {
                "channel_post": {
                    **_message(u, -u, text="/make x"),
                    "chat": {"id": -u, "type": "channel", "title": "c"},
                }
            },
        ),
        ("unknown update kind", lambda u: {"something_new": {"x": 1}}),
        (
            "my_chat_member",
            lambda u: {
                "my_chat_member": {
                    "chat": _chat_json(u),
                    "from": _user_json(u),
                    "date": 1,
                    "old_chat_member": {"status": "member", "user": _user_json(u)},
                    "new_chat_member": {"status": "kicked", "user": _user_json(u), "until_date": 0},
                }
            },
        ),
        (
            "text with broken entities",
            lambda u: {
                "message": _message(
                    u,
                    u,
                    text="/make",
                    entities=[{"type": "bot_command", "offset": 0, "length": 99}],
                )
            },
        ),
    ]:
        await raw(label, "bot: raw updates", build)
    # An edit is never run again (nothing charged: checked with every case below), and says so.
    for label, text in [("edited /make", "/make a cat"), ("edited prompt", "a cat, no, a dog")]:
        await raw(
            label,
            "bot: edited messages",
            lambda u, t=text: {"edited_message": _message(u, u, text=t, edit_date=1)},
            "edits are not run again",
        )
    other = theirs.workflow_id
    for label, cb_data, expect in [
        ("no feature", "nonsense", None),
        ("empty data", "", None),
        ("64 bytes of junk", "z" * 64, None),
        ("settings:", "settings:", None),
        ("settings set huge steps", "settings:set:steps:999999", "steps"),
        ("settings set unknown field", "settings:set:colour:red", "unknown setting"),
        ("settings set nan cfg", "settings:set:cfg:nan", "cfg"),
        ("settings reset junk", "settings:reset:maybe", None),
        ("cancel, no id", "job:cancel", None),
        ("cancel, empty id", "job:cancel:", "not found"),
        ("cancel, unknown job", "job:cancel:make-nope-1", "not found"),
        ("cancel another user's job", f"job:cancel:{other}", "not found"),  # the same words
        ("res up another user's output", f"res:up:{their_output}", "not found"),
        ("regen 0", "regen:0", None),
        ("res up unknown blob", "res:up:nope", None),
        ("res up empty", "res:up:", None),
        ("res regen junk", "res:regen:xyz", "not among"),
        ("res unknown action", "res:boom", None),
        ("collection unknown", "coll:show:colnope", "not found"),
        ("collection no args", "coll:cook", "out of date"),
        ("train junk", "train:go:x:abc", None),
        ("train no args", "train:", "out of date"),
        ("model delete unknown", "model:delok:nope", None),
        ("model junk", "model:zzz:1", None),
    ]:
        await raw(label, "bot: callback data", lambda u, d=cb_data: _callback(u, d), expect)

    # ---- wait until the bot has taken every update and gone quiet -----------------------------
    deadline = time.monotonic() + 60
    while standin.pending_updates() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not standin.pending_updates(), "the bot stopped taking updates"
    await _quiet(standin, cases)

    answered = {a["callback_query_id"]: a for a in standin.answered_callbacks()}
    failures: list[str] = []
    for case in cases:
        said: list[str] = [
            (m.get("text") or m.get("caption") or "")
            for m in await standin.messages_async(case.chat)
            if m["from_bot"]
        ]
        if case.callback_id and case.callback_id in answered:
            said.append(answered[case.callback_id].get("text") or "")
        words = "\n".join(said)
        bad = APOLOGY in words.lower() or "Traceback" in words
        missing = case.expect is not None and case.expect not in words.lower()
        if bad or missing:
            fuzz_tally.crash(case.entry)
            failures.append(f"{case.label}: expected {case.expect!r}, the bot said {words[:300]!r}")
        elif said:
            fuzz_tally.refused(case.entry)
        else:
            fuzz_tally.accepted(case.entry)  # no answer: noise, groups, unknown kinds
        balance, entries = await jobs.balance_summary(f"telegram:{case.user}", 50)
        if balance != 500 or len(entries) != 1:
            failures.append(f"{case.label}: balance {balance}, {len(entries)} ledger entries")
    assert fuzz_bot.process.is_running(), fuzz_bot.log(60)
    assert not failures, "\n".join(failures) + "\n\nbot log:\n" + fuzz_bot.log(80)
    assert " failed\n" not in _log(fuzz_bot), fuzz_bot.log(80)

    # The bot still makes images after the barrage.
    uid = await new_user()
    await standin.send_async(uid, "/make a calm lake")
    await standin.wait_for_async(uid, lambda ms: [m for m in ms if m["photo"]], timeout=60)
    assert fuzz_bot.process.is_running()


async def _quiet(standin: TelegramStandin, cases: list[Case], settle: float = 1.5) -> None:
    """Wait until the bot has made no Bot API call for `settle` seconds (max 30 s)."""
    deadline = time.monotonic() + 30
    last = -1
    while time.monotonic() < deadline:
        calls = len(await standin.calls_async())
        if calls == last:
            return
        last = calls
        await asyncio.sleep(settle)


def _log(bot: BotProcess) -> str:
    path = bot.process.log_path
    return Path(path).read_text(errors="replace") if path else ""


async def test_an_update_the_library_cannot_parse_does_not_wedge_the_bot(
    fuzz_bot: BotProcess, raw_standin: TelegramStandin
) -> None:
    """Found by this fuzz run: a sticker missing fields Telegram always sends made
    python-telegram-bot fail the whole getUpdates batch for ever; now it is dropped alone."""
    standin = raw_standin
    uid = next(_ids) % 10**9 + 10**9
    await _raw(standin, {"message": _message(uid, uid, sticker={"file_id": "s"})})
    await _raw(
        standin,
        {
            "message": _message(
                uid, uid, text="/help", entities=[{"type": "bot_command", "offset": 0, "length": 5}]
            )
        },
    )
    shown = await standin.wait_for_message_async(uid, lambda m: m["from_bot"], timeout=30)
    assert "/make" in (shown["text"] or "")
