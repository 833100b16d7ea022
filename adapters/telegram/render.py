"""What the bot says and which buttons it shows: pure functions from domain models to text and
keyboards, so handlers and the delivery worker word things the same way.

Callback data carry a prefix per feature (routed by pattern in `bot.py`) and stay under
Telegram's 64-byte limit: `settings:<field>`, `settings:set:<field>:<value>`, `settings:back`,
`settings:reset:yes|no`, `job:cancel:<workflow id>`, `regen:<n>`, `res:regen:<workflow id>`,
`res:again`, `res:up:<blob id>`.
"""

from __future__ import annotations

from collections.abc import Sequence

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

from domain.jobs import JobState, JobStatus
from domain.settings import DEFAULT_SAMPLERS, DEFAULT_SCHEDULERS, Limits, UserSettings
from domain.users import JobRecord, LedgerEntry

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
)
CHOICES: dict[str, tuple[str, ...]] = {
    "sampler": DEFAULT_SAMPLERS,
    "scheduler": DEFAULT_SCHEDULERS,
    "send_as_file": ("yes", "no"),
}


def bot_commands() -> list[BotCommand]:
    """The list setMyCommands publishes (the admin command is not advertised)."""
    return [BotCommand(name, text) for name, text in COMMANDS]


def help_text() -> str:
    lines = ["StationThis makes images. Commands:"]
    lines += [f"/{name} — {text}" for name, text in COMMANDS]
    lines.append("")
    lines.append("In a private chat any text you send is a prompt.")
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
    what = "image" if status.kind == "make" else status.kind
    line = f"⏳ {what}: {status.headline()}"
    if status.state is JobState.DELIVERING:
        line = f"📤 {what}: delivering"
    if status.price and not status.final:
        line += f" · {status.price} points"
    if status.clamps:
        line += "\nlowered to fit your balance: " + ", ".join(status.clamps)
    return line


def final_text(status: JobStatus) -> str:
    """A job that ended without images: what happened and the refund, and what to do next."""
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
    parts.append(f"{status.price} points")
    if status.refund:
        parts.append(f"refunded {status.refund}")
    if status.reason:
        parts.append(f"({status.reason})")
    return " · ".join(parts)[:1024]


def result_keyboard(status: JobStatus, index: int) -> InlineKeyboardMarkup | None:
    """Regen / Again / Upscale under a delivered image."""
    out = status.outputs[index] if index < len(status.outputs) else None
    row: list[InlineKeyboardButton] = []
    if status.kind == "make":
        row.append(InlineKeyboardButton("Regen", callback_data=f"res:regen:{status.workflow_id}"))
        row.append(InlineKeyboardButton("Again", callback_data="res:again"))
    if out is not None and status.kind != "upscale":
        row.append(InlineKeyboardButton("Upscale", callback_data=f"res:up:{out.blob_id}"))
    return InlineKeyboardMarkup([row]) if row else None


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
        InlineKeyboardButton(
            f"{name}: {_show(getattr(settings, name))}"[:40], callback_data=f"settings:{name}"
        )
        for name in SETTINGS_FIELDS
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    rows.append([InlineKeyboardButton("Reset to defaults", callback_data="settings:reset")])
    return InlineKeyboardMarkup(rows)


def choice_keyboard(field: str) -> InlineKeyboardMarkup:
    options = CHOICES[field]
    buttons = [
        InlineKeyboardButton(o, callback_data=f"settings:set:{field}:{o}"[:64]) for o in options
    ]
    rows = [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
    rows.append([InlineKeyboardButton("« back", callback_data="settings:back")])
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
                InlineKeyboardButton("Yes, reset", callback_data="settings:reset:yes"),
                InlineKeyboardButton("No, keep them", callback_data="settings:reset:no"),
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
        what = s.prompt or s.kind
        lines.append(f"{i}. {s.kind} — {s.headline()} — {what[:60]}")
    return "\n".join(lines)


def jobs_keyboard(statuses: Sequence[JobStatus]) -> InlineKeyboardMarkup | None:
    rows = [
        [InlineKeyboardButton(f"Cancel {i}", callback_data=f"job:cancel:{s.workflow_id}"[:64])]
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
    row = [
        InlineKeyboardButton(str(i), callback_data=f"regen:{i}") for i in range(1, len(runs) + 1)
    ]
    return InlineKeyboardMarkup([row])


def rate_limited_text(wait: float) -> str:
    return (
        f"You're sending commands faster than I can keep up with. "
        f"Please wait {max(1, round(wait))} s and try again."
    )
