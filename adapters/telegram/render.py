"""What the bot says and which buttons it shows: pure functions from domain models to text and
keyboards, so handlers and the delivery worker word things the same way.

Callback data carry a prefix per feature (routed by pattern in `bot.py`) and are built by
`button`, which refuses anything over Telegram's 64 bytes (never cuts it): `settings:<field>`,
`settings:set:<field>:<value>`, `settings:back`, `settings:reset:yes|no`, `job:cancel:<ref>`,
`regen:<n>`, `res:regen:<ref>`, `res:again:<ref>`, `res:up:<blob id>`, where `<ref>` is the
22-character `job_ref` of a workflow id (ids grow past 64 bytes with 10-digit chat and message
ids; the jobs client maps a ref back to its job and owner).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

from domain.collections import Collection, CookProgress, CookState
from domain.jobs import JobPlan, JobState, JobStatus, job_ref
from domain.settings import DEFAULT_SAMPLERS, DEFAULT_SCHEDULERS, Limits, UserSettings
from domain.training import MAX_IMAGES, MIN_IMAGES, STEPS_MAX, STEPS_MIN, Dataset, LoraModel
from domain.users import JobRecord, LedgerEntry

if TYPE_CHECKING:
    from store.collections import Piece

COMMANDS: list[tuple[str, str]] = [
    ("start", "register and get your starter points"),
    ("help", "what the bot can do"),
    ("make", "make an image: /make a cat in the snow"),
    ("upscale", "upscale a photo 2x or 4x (caption or reply to a photo)"),
    ("rmbg", "remove the background of a photo"),
    ("resize", "resize a photo: /resize 512 512 [fit|fill|exact]"),
    ("convert", "convert a photo: /convert png|jpeg|webp [quality]"),
    ("settings", "show and change your settings"),
    ("set", "change one setting: /set steps 20"),
    ("reset", "reset your settings to the defaults"),
    ("balance", "points, limits and recent charges"),
    ("status", "your running jobs, with Cancel buttons"),
    ("cancel", "cancel your running job"),
    ("regen", "repeat one of your last 5 images (same seed)"),
    ("again", "repeat your last image with a new seed"),
    ("collections", "your collections: create, cook, review, export"),
    ("traits", "set a trait type's values: /traits COLLECTION TRAIT"),
    ("train", "train your own LoRA from 4 … 20 photos"),
    ("models", "your trained LoRA models: rename, delete, publish"),
    ("safety", "this chat's content filter: /safety off|blur|block (group admins)"),
    ("apikey", "a key for the HTTP API: /apikey [list | revoke KEY_ID] (private chat)"),
    ("login", "a one-time code to sign in on the web page"),
    ("link", "link this chat to your web account: /link CODE"),
]
ADMIN_COMMANDS: list[tuple[str, str]] = [("grant", "admins: /grant USER N adds N points")]

MEDIA_COMMANDS = ("upscale", "rmbg", "resize", "convert")

# Fields the settings keyboard offers; choices get buttons, the rest are typed.
SETTINGS_FIELDS: tuple[str, ...] = (
    "width",
    "height",
    "steps",
    "cfg",
    "strength",
    "batch",
    "seed",
    "sampler",
    "scheduler",
    "negative",
    "template",
    "send_as_file",
    "confirm_text_prompts",
)
CHOICES: dict[str, tuple[str, ...]] = {
    "sampler": DEFAULT_SAMPLERS,
    "scheduler": DEFAULT_SCHEDULERS,
    "send_as_file": ("yes", "no"),
    "confirm_text_prompts": ("yes", "no"),
}


CALLBACK_DATA_LIMIT = 64  # bytes: Telegram refuses longer callback_data (BUTTON_DATA_INVALID)


def button(text: str, data: str) -> InlineKeyboardButton:
    """The one place a callback button is built: its data must fit Telegram's 64 bytes.

    Data are never cut (a cut id names another job): anything that can grow, a workflow id
    above all, goes as its fixed-length `job_ref`, resolved by the jobs client.
    """
    size = len(data.encode())
    if not 1 <= size <= CALLBACK_DATA_LIMIT:
        raise ValueError(f"callback_data of {size} bytes (1 … {CALLBACK_DATA_LIMIT}): {data!r}")
    return InlineKeyboardButton(text, callback_data=data)


PRIVATE_ONLY_COMMANDS = frozenset({"train", "apikey"})  # refused in groups


def bot_commands(group: bool = False) -> list[BotCommand]:
    """The list setMyCommands publishes (the admin command is not advertised); the group
    menu (scope all_group_chats) lists only what works in a group."""
    return [
        BotCommand(name, text)
        for name, text in COMMANDS
        if not (group and name in PRIVATE_ONLY_COMMANDS)
    ]


def help_text() -> str:
    lines = ["StationThis makes images. Commands:"]
    lines += [f"/{name} — {text}" for name, text in COMMANDS]
    lines.append("")
    lines.append(
        "In a private chat any text you send is a prompt: I show the price and make it when "
        "you tap (turn that question off with confirm_text_prompts in /settings)."
    )
    return "\n".join(lines)


def welcome_text(points: int, created: bool) -> str:
    head = (
        f"Welcome to StationThis! You got {points} starter points."
        if created
        else f"Welcome back! You have {points} points."
    )
    return (
        f"{head}\n\n"
        "Send a prompt (or /make PROMPT) to make an image. Send a photo with /upscale, /rmbg, "
        "/resize or /convert as caption to work on it. /settings changes size, steps and more; "
        "/balance shows your points. /help lists everything."
    )


def status_text(status: JobStatus) -> str:
    """The live status message of one job."""
    if status.kind == "train":
        return train_status_text(status)
    what = "image" if status.kind == "make" else status.kind
    line = f"⏳ {what}: {status.headline()}"
    if status.state is JobState.DELIVERING:
        line = f"📤 {what}: delivering"
    if status.price and not status.final:
        line += f" · {status.price} points"
    if status.clamps:
        line += "\nlowered to fit your balance: " + ", ".join(status.clamps)
    return line


def status_keyboard(status: JobStatus) -> InlineKeyboardMarkup | None:
    """The Cancel button under a live status message, while the job can still be cancelled
    (an edit without it removes it: delivering and final jobs have none)."""
    if not status.state.cancellable:
        return None
    return InlineKeyboardMarkup(
        [[button("🛑 Cancel", data=f"job:cancel:{job_ref(status.workflow_id)}")]]
    )


TEXT_CONFIRM = "tp:go"  # the confirm button under a quoted plain-text prompt


def text_confirm_text(prompt: str, plan: JobPlan) -> str:
    """The question a plain-text prompt gets before anything is charged."""
    return (
        f"Make “{prompt[:300]}” for {plan.price} points?\n{plan.summary.split(':')[0]}. "
        "Nothing is charged before you tap. (/settings → confirm_text_prompts turns this "
        "question off; /make PROMPT never asks.)"
    )


def text_confirm_keyboard(price: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[button(f"✅ Make it — {price} points", data=TEXT_CONFIRM)]])


def final_text(status: JobStatus) -> str:
    """A job that ended without images: what happened and the refund, and what to do next."""
    if status.kind == "train":
        return train_final_text(status)
    what = "image" if status.kind == "make" else status.kind
    s = status.state
    if s is JobState.CANCELLED:
        return f"🛑 {what} cancelled, refunded {status.refund} points."
    if s is JobState.REFUSED:
        return (
            f"🚫 {what} refused: {status.reason}. Nothing was charged. See /balance or /settings."
        )
    if s is JobState.FAILED:
        return (
            f"❌ {what} failed: {status.reason or 'unknown error'}. "
            f"Refunded {status.refund} points; please try again."
        )
    return f"{what}: {status.headline()}"


# Said under an image sent behind a spoiler (this chat's `/safety blur`).
SPOILER_NOTE = "hidden: flagged by this chat's content filter, tap to show"


def result_caption(status: JobStatus, index: int) -> str:
    """Caption of one delivered image: prompt, seed, price."""
    parts: list[str] = []
    if status.kind == "make":
        if status.prompt:
            parts.append(status.prompt[:700])
        seed = status.seeds[index] if index < len(status.seeds) else None
        if seed is None and index < len(status.outputs):
            seed = status.outputs[index].seed
        if seed is not None:
            parts.append(f"seed {seed}")
    else:
        out = status.outputs[index] if index < len(status.outputs) else None
        size = f" {out.width}×{out.height}" if out and out.width else ""
        parts.append(f"{status.kind}{size}")
        reduced = (status.settings.get("params") or {}).get("input_size")
        if status.kind == "upscale" and reduced:  # the source was too large for the cap
            parts.append(f"source reduced to {reduced[0]}×{reduced[1]} first to fit the cap")
    if index < len(status.outputs) and status.outputs[index].spoiler:
        parts.append(SPOILER_NOTE)
    return _caption(parts, status)


def result_keyboard(status: JobStatus, index: int) -> InlineKeyboardMarkup | None:
    """Regen / Again / Upscale under a delivered image: each acts on THIS image's job (its
    ref) or file, never on whatever ran last."""
    out = status.outputs[index] if index < len(status.outputs) else None
    row: list[InlineKeyboardButton] = []
    if status.kind == "make":
        ref = job_ref(status.workflow_id)
        row.append(button("Regen", data=f"res:regen:{ref}"))
        row.append(button("Again", data=f"res:again:{ref}"))
    if out is not None and status.kind != "upscale":
        row.append(button("Upscale", data=f"res:up:{out.blob_id}"))
    return InlineKeyboardMarkup([row]) if row else None


def album_caption(status: JobStatus) -> str:
    """Caption of a batch sent as one album (on its first item, which Telegram shows as the
    album's caption): prompt, every seed, price."""
    parts: list[str] = []
    if status.prompt:
        parts.append(status.prompt[:700])
    seeds = list(status.seeds) or [o.seed for o in status.outputs if o.seed is not None]
    if seeds:
        parts.append("seeds " + ", ".join(str(s) for s in seeds))
    parts.append(f"{len(status.outputs)} images")
    hidden = sum(1 for o in status.outputs if o.spoiler)
    if hidden:
        parts.append(f"{hidden} {SPOILER_NOTE}")
    return _caption(parts, status)


def _caption(parts: list[str], status: JobStatus) -> str:
    """`parts` then what the job cost, refunded and why, within a caption's 1024 characters."""
    parts = [*parts, f"{status.price} points"]
    if status.refund:
        parts.append(f"refunded {status.refund}")
    if status.reason:
        parts.append(f"({status.reason})")
    return " · ".join(parts)[:1024]


ALBUM_BUTTONS_TEXT = "☝️ {n} images above: Regen, Again, or upscale one of them (⬆ 1–{n})."


def album_keyboard(status: JobStatus) -> InlineKeyboardMarkup | None:
    """The ONE button row of an album (albums cannot carry buttons, so it goes in the message
    after it): Regen and Again of the run, and an upscale button per image, numbered as in the
    album. Telegram allows 8 buttons a row: a batch of up to 6 fits in one."""
    row: list[InlineKeyboardButton] = []
    if status.kind == "make":
        ref = job_ref(status.workflow_id)  # never the long workflow id: 64 bytes at most
        row.append(button("Regen", data=f"res:regen:{ref}"))
        row.append(button("Again", data=f"res:again:{ref}"))
    if status.kind != "upscale":
        row.extend(
            button(f"⬆ {i}", data=f"res:up:{out.blob_id}")
            for i, out in enumerate(status.outputs, 1)
        )
    rows = [row[i : i + 8] for i in range(0, len(row), 8)]
    return InlineKeyboardMarkup(rows) if rows else None


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return text if text else "—"


def settings_text(settings: UserSettings, limits: Limits, points: int) -> str:
    lines = ["Your settings (tap one to change it):"]
    for name in SETTINGS_FIELDS:
        lines.append(f"{name}: {_show(getattr(settings, name))}")
    lines.append("")
    lines.append(
        f"Your limits with {points} points: size up to {limits.max_size}, "
        f"steps up to {limits.max_steps}, batch up to {limits.max_batch}."
    )
    return "\n".join(lines)


def settings_keyboard(settings: UserSettings) -> InlineKeyboardMarkup:
    buttons = [
        button(f"{name}: {_show(getattr(settings, name))}"[:40], data=f"settings:{name}")
        for name in SETTINGS_FIELDS
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([button("Reset to defaults", data="settings:reset")])
    return InlineKeyboardMarkup(rows)


def choice_keyboard(field: str) -> InlineKeyboardMarkup:
    options = CHOICES[field]
    buttons = [button(o, data=f"settings:set:{field}:{o}") for o in options]
    rows = [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    rows.append([button("« back", data="settings:back")])
    return InlineKeyboardMarkup(rows)


def allowed_range(field: str, limits: Limits, group_chat: bool = False) -> str:
    """What a typed value may be, said before the user types it."""
    if field in ("width", "height"):
        return f"64 … {limits.max_size}, a multiple of 8"
    if field == "steps":
        return f"1 … {limits.max_steps}"
    if field == "batch":
        return "1 in group chats" if group_chat else f"1 … {limits.max_batch}"
    if field == "seed":
        return "-1 for random, or a whole number"
    if field == "cfg":
        return "0 … 30, one decimal"
    if field == "strength":
        return "0 … 1"
    if field == "negative":
        return "text (send - to clear)"
    return "text"


def ask_value_text(field: str, current: object, limits: Limits, group_chat: bool) -> str:
    return (
        f"Send the new value for {field} (now {_show(current)}; allowed: "
        f"{allowed_range(field, limits, group_chat)}). Send /settings to go back."
    )


def reset_confirm_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                button("Yes, reset", data="settings:reset:yes"),
                button("No, keep them", data="settings:reset:no"),
            ]
        ]
    )


def balance_text(points: int, limits: Limits, entries: Sequence[LedgerEntry]) -> str:
    lines = [
        f"Balance: {points} points",
        f"Limits: size up to {limits.max_size}, steps up to {limits.max_steps}, "
        f"batch up to {limits.max_batch}.",
    ]
    if entries:
        lines.append("")
        lines.append("Recent:")
        for e in entries:
            sign = "-" if e.kind == "charge" else "+"
            why = e.reason or (e.job_id or "")
            lines.append(
                f"{e.created_at:%Y-%m-%d %H:%M} {e.kind} {sign}{e.amount} {why}"[:120].rstrip()
            )
    return "\n".join(lines)


def jobs_text(statuses: Sequence[JobStatus]) -> str:
    if not statuses:
        return "No jobs running. Send a prompt to make an image."
    lines = ["Your running jobs:"]
    for i, s in enumerate(statuses, 1):
        if s.kind == "cook":  # one line for the whole cook: its pieces are not listed
            lines.append(f"{i}. cook {s.settings.get('collection', '')} — {s.detail}")
            continue
        what = s.prompt or s.kind
        lines.append(f"{i}. {s.kind} — {s.headline()} — {what[:60]}")
    return "\n".join(lines)


def jobs_keyboard(statuses: Sequence[JobStatus]) -> InlineKeyboardMarkup | None:
    rows = [
        [button(f"Cancel {i}", data=f"job:cancel:{job_ref(s.workflow_id)}")]
        for i, s in enumerate(statuses, 1)
        if s.state.cancellable
    ]
    return InlineKeyboardMarkup(rows) if rows else None


def regen_text(runs: Sequence[JobRecord]) -> str:
    if not runs:
        return "No images to repeat yet: send a prompt first."
    lines = ["Repeat which one (same seed)?"]
    for i, r in enumerate(runs, 1):
        seed = r.seeds[0] if r.seeds else "?"
        lines.append(f"{i}. {r.prompt[:60]} (seed {seed})")
    return "\n".join(lines)


def regen_keyboard(runs: Sequence[JobRecord]) -> InlineKeyboardMarkup | None:
    if not runs:
        return None
    row = [button(str(i), data=f"regen:{i}") for i in range(1, len(runs) + 1)]
    return InlineKeyboardMarkup([row])


def rate_limited_text(wait: float) -> str:
    return (
        f"You're sending commands faster than I can keep up with. "
        f"Please wait {max(1, round(wait))} s and try again."
    )


# ---- collections (/collections, /traits): see adapters/telegram/collections.py -------------
# Callback data: `coll:new`, `coll:show:<cid>`, `coll:trait:<cid>:<i>`, `coll:addtrait:<cid>`,
# `coll:prompt:<cid>`, `coll:cook:<cid>`, `coll:go:<cid>`, `coll:keep:<cid>`,
# `coll:ctl:<pause|resume|cancel>:<cid>`, `coll:status:<cid>`, `coll:review:<cid>`,
# `coll:ok:<cid>:<n>`, `coll:no:<cid>:<n>`, `coll:export:<cid>` (ids are 11 characters, so all
# stay far below 64 bytes; trait types go by index, not by name, for the same reason).

TRAIT_LINES_HELP = (
    "one value per line as name|prompt|rarity, e.g.\n"
    "red|red fur|3\n"
    "grey|grey fur|1\n"
    "(prompt defaults to the name, rarity to 0.5; a higher rarity is chosen more often; "
    "none|''|1 leaves the trait out)"
)


def collections_text(cols: Sequence[Collection]) -> str:
    if not cols:
        return (
            "You have no collections yet. Tap “New collection” (or send /collections new): "
            "I'll ask for a name, a description, the master prompt and the supply."
        )
    lines = ["Your collections (tap one to open it):"]
    for i, c in enumerate(cols, 1):
        lines.append(
            f"{i}. {c.name} ({c.id}) — supply {c.supply}, "
            f"{len(c.config.traits)} trait types, cooked {c.cooks}×"
        )
    return "\n".join(lines)


def collections_keyboard(cols: Sequence[Collection]) -> InlineKeyboardMarkup:
    rows = [[button(f"{c.name} ({c.id})"[:40], data=f"coll:show:{c.id}")] for c in cols[:20]]
    rows.append([button("➕ New collection", data="coll:new")])
    return InlineKeyboardMarkup(rows)


def collection_text(col: Collection, counts: Mapping[str, int]) -> str:
    c = col.config
    lines = [f"🧩 {col.name} ({col.id}) — supply {col.supply}"]
    if col.description:
        lines.append(col.description)
    lines.append(f"Master prompt: {c.master_prompt or '(not set yet: tap ✏️ prompt)'}")
    if not c.traits:
        lines.append(f"No trait types yet: /traits {col.id} NAME, then the value lines.")
    for t in c.traits:
        values = ", ".join(f"{v.name} ({v.rarity:g})" for v in t.values)
        lines.append(f"[[{t.name}]]: {values}"[:300])
    if counts:
        lines.append("Pieces: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if col.cook_started:
        lines.append("Cooking has started: prompt, traits and supply are frozen.")
    return "\n".join(lines)[:4000]


def collection_keyboard(col: Collection, counts: Mapping[str, int]) -> InlineKeyboardMarkup:
    rows: list[list[InlineKeyboardButton]] = []
    if not col.cook_started:
        trait_buttons = [
            button(f"✏️ {t.name}"[:30], data=f"coll:trait:{col.id}:{i}")
            for i, t in enumerate(col.config.traits)
        ]
        rows += [trait_buttons[i : i + 3] for i in range(0, len(trait_buttons), 3)]
        rows.append(
            [
                button("➕ trait type", data=f"coll:addtrait:{col.id}"),
                button("✏️ prompt", data=f"coll:prompt:{col.id}"),
            ]
        )
    row = [button("🍳 Cook", data=f"coll:cook:{col.id}")]
    if col.last_cook:
        row.append(button("📊 Status", data=f"coll:status:{col.id}"))
    rows.append(row)
    if counts.get("pending_review") or counts.get("approved") or counts.get("rejected"):
        rows.append(
            [
                button("🔍 Review", data=f"coll:review:{col.id}"),
                button("📦 Export", data=f"coll:export:{col.id}"),
            ]
        )
    return InlineKeyboardMarkup(rows)


def cook_quote_text(name: str, pieces: int, price: int, total: int, balance: int) -> str:
    text = (
        f"Cook {name}: {pieces} pieces × {price} points = {total} points in total.\n"
        f"Your balance: {balance} points."
    )
    if balance < total:
        text += (
            f"\nThat covers {balance // price if price else pieces} pieces: the cook pauses when "
            "your points run out and resumes by itself after a top-up."
        )
    return text + "\nEach piece is charged when it starts and refunded if it fails."


def cook_confirm_keyboard(cid: str, total: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                button(f"✅ Cook for {total} points", data=f"coll:go:{cid}"),
                button("Not now", data=f"coll:keep:{cid}"),
            ]
        ]
    )


def cook_text(name: str, progress: CookProgress) -> str:
    """The live cook message: state, counts and points, as `CookProgress.headline` says them."""
    icon = {
        CookState.RUNNING: "🍳",
        CookState.PAUSED: "⏸",
        CookState.WAITING_FOR_POINTS: "💤",
        CookState.CANCELLING: "🛑",
        CookState.DONE: "✅",
        CookState.CANCELLED: "🛑",
    }[progress.state]
    text = f"{icon} {name} — {progress.headline()}"
    if progress.state is CookState.WAITING_FOR_POINTS:
        text += "\nWaiting for points: it resumes by itself after a top-up (see /balance)."
    if progress.state is CookState.DONE:
        text += "\nTap Review to approve or reject the pieces, then Export."
    if progress.refunded:
        text += f"\nRefunded {progress.refunded} points."
    return text


def cook_keyboard(cid: str, progress: CookProgress) -> InlineKeyboardMarkup | None:
    s = progress.state
    if s in (CookState.RUNNING, CookState.WAITING_FOR_POINTS):
        row = [
            button("⏸ Pause", data=f"coll:ctl:pause:{cid}"),
            button("🛑 Cancel", data=f"coll:ctl:cancel:{cid}"),
        ]
    elif s is CookState.PAUSED:
        row = [
            button("▶️ Resume", data=f"coll:ctl:resume:{cid}"),
            button("🛑 Cancel", data=f"coll:ctl:cancel:{cid}"),
        ]
    elif s.final:
        row = [
            button("🔍 Review", data=f"coll:review:{cid}"),
            button("📦 Export", data=f"coll:export:{cid}"),
        ]
    else:
        return None
    return InlineKeyboardMarkup([row])


VERDICT_MARK = {"approved": "✅ approved", "rejected": "✖ rejected"}


def piece_caption(piece: Piece) -> str:
    traits = ", ".join(f"{k}: {v}" for k, v in piece.traits.items() if v) or "no traits"
    text = f"#{piece.number} · {traits} · seed {piece.seed}\n{piece.prompt}"[:900]
    if piece.state in VERDICT_MARK:
        text += f"\n{VERDICT_MARK[piece.state]}"
    return text


def piece_keyboard(cid: str, piece: Piece) -> InlineKeyboardMarkup:
    approve = button("✅ Approve", data=f"coll:ok:{cid}:{piece.number}")
    reject = button("✖ Reject", data=f"coll:no:{cid}:{piece.number}")
    if piece.state == "approved":
        return InlineKeyboardMarkup([[reject]])
    if piece.state == "rejected":
        return InlineKeyboardMarkup([[approve]])
    return InlineKeyboardMarkup([[approve, reject]])


def review_footer_text(shown: int, pending: int) -> str:
    more = pending - shown
    text = f"{shown} piece(s) above to review: tap Approve or Reject under each."
    if more > 0:
        text += f" {more} more wait: tap “Show more” when you are done with these."
    return text + " Export zips the approved ones with their metadata."


def review_footer_keyboard(cid: str, more: bool) -> InlineKeyboardMarkup:
    row = [button("📦 Export approved", data=f"coll:export:{cid}")]
    if more:
        row.insert(0, button("🔍 Show more", data=f"coll:review:{cid}"))
    return InlineKeyboardMarkup([row])


def export_caption(name: str, summary: Mapping[str, Any]) -> str:
    lines = [f"📦 {name}: {summary.get('pieces', 0)} approved pieces (metadata JSON + image each)"]
    freq: Mapping[str, Mapping[str, int]] = summary.get("trait_frequencies", {})
    for trait, values in freq.items():
        lines.append(f"{trait}: " + ", ".join(f"{v} {n}" for v, n in sorted(values.items())))
    return "\n".join(lines)[:1024]


# ---- LoRA training (/train, /models): see adapters/telegram/training.py ---------------------
# Callback data: `train:photos:<ds>` (photos are in), `train:edit:<ds>:<n>` (edit caption n),
# `train:quote:<ds>`, `train:steps:<ds>:<steps>`, `train:go:<ds>:<steps>`, `train:stop:<ds>`;
# `model:ren:<id>`, `model:del:<id>`, `model:delok:<id>`, `model:pub:<id>`, `model:priv:<id>`,
# `model:list` (ids are 24-character ObjectIds: everything stays below 64 bytes).

TRAIN_STEP_CHOICES = (500, 1000, 1500, 3000)


def _model_name(status: JobStatus) -> str:
    training = status.settings.get("training") or {}
    return str(training.get("model_name") or status.settings.get("dataset") or "your LoRA")


def train_status_text(status: JobStatus) -> str:
    """The live training message: stage, percent and step/total."""
    name = _model_name(status)
    s = status.state
    if s is JobState.RUNNING and status.stage == "training":
        line = f"🏋️ LoRA {name}: training {status.percent:.0f}%"
        if status.total_steps:
            line += f" · step {status.step}/{status.total_steps}"
        if status.loss is not None:
            line += f" · loss {status.loss:.4f}"
    elif s is JobState.RUNNING and status.stage == "captioning":
        line = f"🏋️ LoRA {name}: captioning photos {status.percent:.0f}%"
    elif s is JobState.DELIVERING:
        line = f"🏋️ LoRA {name}: saving the model"
    else:
        line = f"🏋️ LoRA {name}: {status.headline()}"
    if status.price and not status.final:
        line += f" · {status.price} points"
    return line


def train_done_text(status: JobStatus) -> str:
    """The message a finished training sends: the model's name and trigger word, and how to
    use them."""
    model = status.model or {}
    name = str(model.get("name") or _model_name(status))
    trigger = str(model.get("trigger_word") or "")
    weight = model.get("default_weight", 0.8)
    lines = [f"✅ Your LoRA {name} is ready."]
    if trigger:
        lines.append(f"Trigger word: {trigger}")
        lines.append(f"Put it in a prompt to use the model, e.g. /make {trigger} on a hill at dawn")
    lines.append(f"Or name it with a weight: <lora:{name}:{weight}>")
    lines.append(f"Charged {status.price} points. /models lists your models.")
    return "\n".join(lines)


def train_final_text(status: JobStatus) -> str:
    """How a training job ended, with the refund and what to do next."""
    s = status.state
    if s in (JobState.DONE, JobState.DELIVERING):
        return train_done_text(status)
    name = _model_name(status)
    if s is JobState.CANCELLED:
        return (
            f"🛑 LoRA {name}: training cancelled, refunded {status.refund} points. "
            "/train to start again."
        )
    if s is JobState.REFUSED:
        return (
            f"🚫 LoRA {name} refused: {status.reason}. Nothing was charged: /train {name} to "
            "try again (fewer steps cost less), /balance shows your points."
        )
    if s is JobState.FAILED:
        return (
            f"❌ LoRA {name}: training failed ({status.reason or 'unknown error'}). "
            f"Refunded {status.refund} points; your photos are kept: /train {name} to try again."
        )
    return f"LoRA {name}: {status.headline()}"


def train_photos_text(name: str, count: int) -> str:
    """After each photo: how many are in and what is next."""
    if count < MIN_IMAGES:
        more = MIN_IMAGES - count
        return f"✓ {count} photo(s) in {name}. Send {more} more (at least {MIN_IMAGES} are needed)."
    if count >= MAX_IMAGES:
        return f"✓ {count} photos in {name}: that is the most a dataset takes. Tap Done."
    return f"✓ {count} photos in {name}. Send more (up to {MAX_IMAGES}) or tap Done."


def train_photos_keyboard(ds_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[button("✅ Done: next, the trigger word", data=f"train:photos:{ds_id}")]]
    )


def train_caption_text(n: int, caption: str) -> str:
    return f"#{n}: {caption or '(no caption yet: tap Edit to type one)'}"[:1024]


def train_caption_keyboard(ds_id: str, n: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[button(f"✏️ Edit caption #{n}", data=f"train:edit:{ds_id}:{n}")]])


def train_review_footer_text(ds: Dataset, failed: int = 0) -> str:
    text = (
        f"(4/5) These are the captions of the {len(ds.images)} photos in {ds.name}, with the "
        f"trigger word {ds.trigger_word}. Tap ✏️ Edit under a photo to type a better caption "
        "(it replaces the one shown), then tap Next: price."
    )
    if failed:
        text += f"\n{failed} photo(s) could not be captioned: tap Edit under them to type one."
    return text


def train_next_keyboard(ds_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[button("➡️ Next: price", data=f"train:quote:{ds_id}")]])


def train_quote_text(ds: Dataset, plan: JobPlan, steps: int, balance: int) -> str:
    text = (
        f"(5/5) Train {plan.summary}: {plan.price} points.\n"
        f"Trigger word: {ds.trigger_word}. Your balance: {balance} points.\n"
        f"More steps learn more and cost more: tap a step count or send a number "
        f"({STEPS_MIN} … {STEPS_MAX}). Nothing is charged before you tap Train."
    )
    if balance < plan.price:
        text += f"\nYou need {plan.price - balance} more points: fewer steps cost less (/balance)."
    return text


def train_quote_keyboard(ds_id: str, steps: int, price: int) -> InlineKeyboardMarkup:
    choices = [
        button(f"{'• ' if s == steps else ''}{s} steps", data=f"train:steps:{ds_id}:{s}")
        for s in TRAIN_STEP_CHOICES
    ]
    return InlineKeyboardMarkup(
        [
            [button(f"✅ Train for {price} points", data=f"train:go:{ds_id}:{steps}")],
            choices,
            [button("Not now", data=f"train:stop:{ds_id}")],
        ]
    )


def models_text(models: Sequence[LoraModel]) -> str:
    if not models:
        return (
            "You have no models yet. /train makes one from 4 … 20 photos of your subject: "
            "a person, a pet, an object or a style."
        )
    lines = [
        "Your LoRA models: your own apply when their trigger word is in a prompt; anyone "
        "else's public model only when the prompt names it, <lora:NAME>."
    ]
    for i, m in enumerate(models, 1):
        shared = "public" if m.public else "private"
        lines.append(
            f"{i}. {m.name} — trigger {m.trigger_word} — {m.family}, weight "
            f"{m.default_weight:g}, {shared}"
        )
    return "\n".join(lines)[:4000]


def models_keyboard(models: Sequence[LoraModel]) -> InlineKeyboardMarkup | None:
    rows: list[list[InlineKeyboardButton]] = []
    for i, m in enumerate(models[:30], 1):
        share = (
            button(f"🔒 Unpublish {i}", data=f"model:priv:{m.id}")
            if m.public
            else button(f"🌐 Publish {i}", data=f"model:pub:{m.id}")
        )
        rows.append(
            [
                button(f"✏️ Rename {i}", data=f"model:ren:{m.id}"),
                button(f"🗑 Delete {i}", data=f"model:del:{m.id}"),
                share,
            ]
        )
    return InlineKeyboardMarkup(rows) if rows else None


def model_delete_keyboard(model_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                button("🗑 Yes, delete it", data=f"model:delok:{model_id}"),
                button("No, keep it", data="model:list"),
            ]
        ]
    )
