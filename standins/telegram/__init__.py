"""A local stand-in for the Telegram Bot API, for tests and offline development.

A real aiohttp server on loopback that speaks the Bot API as python-telegram-bot sends it
(`POST {base_url}{token}/{method}`, form-encoded or multipart; files downloaded from
`{base_file_url}{token}/{file_path}`), keeps every chat's messages, and has a JSON control API
under `/_control/` so a test can act as a user (send text or a photo, press a button) and read
back what each chat shows. Run it with `python -m standins.telegram --port P`.

Bot API methods covered: getMe, getUpdates (long polling, offset/limit/timeout/allowed_updates,
409 while a webhook is set or when another poller takes over), setWebhook (delivery with the
secret-token header, retried with back-off), deleteWebhook, getWebhookInfo, sendMessage,
editMessageText, editMessageCaption, editMessageReplyMarkup, deleteMessage, sendPhoto,
sendDocument, sendMediaGroup, sendChatAction, answerCallbackQuery, getFile (+ file download),
setMyCommands, getMyCommands, deleteMyCommands, getChat, getChatMember. See `server.py` for the
control API and README.md for the real-Telegram behaviours it models (and does not).
"""

from __future__ import annotations

from standins.telegram.server import DEFAULT_TOKEN, StandinState, create_app

__all__ = ["DEFAULT_TOKEN", "StandinState", "create_app"]
