"""Discord's documented limits and error bodies, in one place so the REST routes share them.

Every error the stand-in answers is built here, in the JSON shape Discord uses
(https://discord.com/developers/docs/reference#error-messages): `{"code", "message"}` and, for
a form that fails validation, code 50035 "Invalid Form Body" with an `errors` tree whose
leaves are `{"_errors": [{"code", "message"}]}`. The numeric codes are Discord's JSON error
codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes#json).
"""

from __future__ import annotations

from typing import Any

CONTENT_MAX = 2000
"""Message content: at most 2,000 characters (Create Message, `content`)."""
ACTION_ROWS_MAX = 5
"""At most five action rows in a message (Component reference, Action Row)."""
ROW_COMPONENTS_MAX = 5
"""At most five buttons in an action row (Component reference, Action Row)."""
CUSTOM_ID_MAX = 100
"""A component's `custom_id`: 1 to 100 characters (Component reference, Button)."""
BUTTON_LABEL_MAX = 80
SELECT_OPTIONS_MAX = 25
EMBEDS_MAX = 10
FILES_MAX = 10
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
"""10 MiB: the attachment limit of a server without boosts (Reference, Uploading Files)."""
COMMAND_NAME_MAX = 32
COMMAND_DESCRIPTION_MAX = 100
COMMAND_OPTIONS_MAX = 25
GLOBAL_CHAT_COMMANDS_MAX = 100

# Discord JSON error codes used here.
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_APPLICATION = 10002
UNKNOWN_INTERACTION = 10062
CANNOT_EDIT_OTHERS_MESSAGE = 50005
CANNOT_SEND_EMPTY_MESSAGE = 50006
INVALID_WEBHOOK_TOKEN = 50027
INVALID_FORM_BODY = 50035
REQUEST_ENTITY_TOO_LARGE = 40005
INTERACTION_ALREADY_ACKNOWLEDGED = 40060


class DiscordError(Exception):
    """An error answer: HTTP status plus Discord's JSON body."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            out["errors"] = self.errors
        return out


def unauthorized() -> DiscordError:
    return DiscordError(401, 0, "401: Unauthorized")


def not_found() -> DiscordError:
    return DiscordError(404, 0, "404: Not Found")


def unknown(code: int, what: str) -> DiscordError:
    """`Unknown Channel` (10003), `Unknown Message` (10008), `Unknown Webhook` (10015), ..."""
    return DiscordError(404, code, f"Unknown {what}")


def unknown_interaction() -> DiscordError:
    """10062: the interaction was not acknowledged within 3 seconds, or never existed."""
    return DiscordError(404, UNKNOWN_INTERACTION, "Unknown interaction")


def already_acknowledged() -> DiscordError:
    return DiscordError(
        400, INTERACTION_ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged."
    )


def invalid_webhook_token() -> DiscordError:
    """50027: an interaction token used after its 15 minutes (followups, edits)."""
    return DiscordError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")


def empty_message() -> DiscordError:
    return DiscordError(400, CANNOT_SEND_EMPTY_MESSAGE, "Cannot send an empty message")


def too_large() -> DiscordError:
    """40005 with HTTP 413: an attachment over the upload limit."""
    return DiscordError(413, REQUEST_ENTITY_TOO_LARGE, "Request entity too large")


class FormErrors:
    """Collects field errors into Discord's nested `errors` tree (code 50035)."""

    def __init__(self, prefix: tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        self.tree: dict[str, Any] = {}

    def add(self, path: tuple[str | int, ...], code: str, message: str) -> None:
        node = self.tree
        for part in (*self.prefix, *path):
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(self, path: tuple[str | int, ...], limit: int) -> None:
        self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def raise_if_any(self) -> None:
        if self.tree:
            raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body", self.tree)


def check_message(
    payload: dict[str, Any], file_count: int, *, prefix: tuple[str, ...] = (), edit: bool = False
) -> None:
    """Discord's checks on a message body (create, edit, interaction response, followup).

    Content length, embeds count, classic components (rows, buttons per row, custom id length
    and uniqueness, labels) and the number of files. An edit may leave fields out, so only a
    create is refused as empty.
    """
    errors = FormErrors(prefix)
    content = payload.get("content")
    if content is not None and len(str(content)) > CONTENT_MAX:
        errors.max_length(("content",), CONTENT_MAX)
    embeds = payload.get("embeds") or []
    if len(embeds) > EMBEDS_MAX:
        errors.max_length(("embeds",), EMBEDS_MAX)
    _check_components(payload.get("components") or [], errors)
    if file_count > FILES_MAX:
        errors.max_length(("files",), FILES_MAX)
    errors.raise_if_any()
    if not edit and not (
        content
        or embeds
        or payload.get("components")
        or file_count
        or payload.get("sticker_ids")
        or payload.get("poll")
    ):
        raise empty_message()


def _check_components(rows: list[Any], errors: FormErrors) -> None:
    if len(rows) > ACTION_ROWS_MAX:
        errors.max_length(("components",), ACTION_ROWS_MAX)
    seen: set[str] = set()
    for r, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("type") != 1:
            errors.add(
                ("components", r, "type"),
                "UNION_TYPE_CHOICES",
                'Value of field "type" must be one of (1,).',
            )
            continue
        items = row.get("components") or []
        if len(items) > ROW_COMPONENTS_MAX:
            errors.max_length(("components", r, "components"), ROW_COMPONENTS_MAX)
        for c, item in enumerate(items):
            where = ("components", r, "components", c)
            kind = item.get("type")
            custom_id = item.get("custom_id")
            if kind == 2 and item.get("style") in (5, 6):
                pass  # link and premium buttons carry no custom_id
            elif custom_id is None or custom_id == "":
                errors.add((*where, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            elif len(custom_id) > CUSTOM_ID_MAX:
                errors.max_length((*where, "custom_id"), CUSTOM_ID_MAX)
            elif custom_id in seen:
                errors.add(
                    (*where, "custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            if custom_id:
                seen.add(custom_id)
            label = item.get("label")
            if label is not None and len(label) > BUTTON_LABEL_MAX:
                errors.max_length((*where, "label"), BUTTON_LABEL_MAX)
            if kind in (3, 5, 6, 7, 8):
                if len(items) > 1:
                    errors.add(
                        (*where,),
                        "UI_COMPONENT_WIDTH_EXCEEDED",
                        "The specified component exceeds the maximum width",
                    )
                if len(item.get("options") or []) > SELECT_OPTIONS_MAX:
                    errors.max_length((*where, "options"), SELECT_OPTIONS_MAX)


MODAL_TITLE_MAX = 45
MODAL_COMPONENTS_MAX = 5
TEXT_INPUT_MAX = 4000


def check_modal(data: dict[str, Any]) -> dict[str, Any]:
    """A modal response (type 9): a 1-100 character custom id, a title of at most 45, 1-5
    rows (Components reference: Text Input; Receiving and Responding: Modal). Returns it."""
    errors = FormErrors(("data",))
    custom_id = data.get("custom_id") or ""
    if not custom_id:
        errors.add(("custom_id",), "BASE_TYPE_REQUIRED", "This field is required")
    elif len(custom_id) > CUSTOM_ID_MAX:
        errors.max_length(("custom_id",), CUSTOM_ID_MAX)
    if not data.get("title"):
        errors.add(("title",), "BASE_TYPE_REQUIRED", "This field is required")
    elif len(data["title"]) > MODAL_TITLE_MAX:
        errors.max_length(("title",), MODAL_TITLE_MAX)
    rows = data.get("components") or []
    if not 1 <= len(rows) <= MODAL_COMPONENTS_MAX:
        errors.max_length(("components",), MODAL_COMPONENTS_MAX)
    errors.raise_if_any()
    return data


def custom_ids(rows: list[Any]) -> list[str]:
    """Every custom id of a message's components (the buttons a user can press)."""
    out: list[str] = []
    for row in rows or []:
        for item in (row or {}).get("components") or []:
            if item.get("custom_id"):
                out.append(item["custom_id"])
    return out


def check_commands(commands: list[Any], *, guild: bool) -> None:
    """Bulk overwrite checks: names, descriptions, options, duplicates, the 100 global cap."""
    errors = FormErrors()
    names: set[tuple[int, str]] = set()
    chat_input = 0
    for i, cmd in enumerate(commands):
        kind = int(cmd.get("type", 1))
        name = str(cmd.get("name", ""))
        if not name or len(name) > COMMAND_NAME_MAX:
            errors.max_length((i, "name"), COMMAND_NAME_MAX)
        elif kind == 1 and (
            name != name.lower() or not all(ch.isalnum() or ch in "-_" for ch in name)
        ):
            errors.add(
                (i, "name"),
                "APPLICATION_COMMAND_INVALID_NAME",
                "Command name is invalid",
            )
        if kind == 1:
            chat_input += 1
            desc = str(cmd.get("description", ""))
            if not desc or len(desc) > COMMAND_DESCRIPTION_MAX:
                errors.max_length((i, "description"), COMMAND_DESCRIPTION_MAX)
        if len(cmd.get("options") or []) > COMMAND_OPTIONS_MAX:
            errors.max_length((i, "options"), COMMAND_OPTIONS_MAX)
        if (kind, name) in names:
            errors.add(
                (i, "name"),
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                f"Application command names must be unique: {name}",
            )
        names.add((kind, name))
    if not guild and chat_input > GLOBAL_CHAT_COMMANDS_MAX:
        errors.max_length((), GLOBAL_CHAT_COMMANDS_MAX)
    errors.raise_if_any()
