"""The Discord stand-in for tests: a real subprocess, an async client for its controls, and a
real discord.py bot pointed at it.

`start_discord_standin` runs `python -m standins.discord --port 0` as a `ManagedProcess` and
reads its `ready http://...` line. `DiscordStandin` acts as Discord's users (run a slash
command, press a button) and reads what the bot did; every helper is async because the bot
under test runs in the test's own event loop. `running_bot` points discord.py at the stand-in
(the two class attributes the issue names), starts a `discord.Client` with a `CommandTree`,
waits for `on_ready` and closes it afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord
import discord.gateway
import discord.http
import httpx
import yarl
from discord import app_commands

from standins.discord.state import DEFAULT_TOKEN
from standins.process import start_platform_standin
from workers.processes import ManagedProcess

Message = dict[str, Any]


class DiscordStandin:
    """A running stand-in as tests see it: addresses, ids, token and control helpers."""

    def __init__(self, url: str, token: str = DEFAULT_TOKEN, process: ManagedProcess | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.process = process
        info = httpx.get(f"{self.url}/_control/health", timeout=10).json()
        self.application_id = int(info["application_id"])
        self.bot_user_id = int(info["bot_user_id"])
        self.guild_id = int(info["guild_id"])
        self.channel_id = int(info["channel_id"])

    @property
    def api_base(self) -> str:
        """For `discord.http.Route.BASE`."""
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """For `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`."""
        return "ws://" + self.url.removeprefix("http://") + "/"

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            r = await http.request(method, path, json=body)
        if r.status_code >= 400:
            raise AssertionError(f"stand-in control {path}: {r.status_code} {r.text}")
        return r.json()

    # ------------------------------------------------------------------- act as users

    async def invoke(
        self,
        user_id: int,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        files: Mapping[str, tuple[str, bytes] | tuple[str, bytes, str]] | None = None,
        dm: bool = False,
        forge: bool = False,
        permissions: int | None = None,
    ) -> dict[str, Any]:
        """User runs `/name` in the guild channel (or in their DM with the bot); `permissions`
        are the member's permission bits in the guild (default: an ordinary member's).

        `files` maps an attachment option to (filename, bytes[, content type]). Returns
        `{"interaction_id", "token", "delivered", "channel_id", "seq"}`; `delivered` is False
        while the bot's socket is down (the event waits for its RESUME)."""
        body: dict[str, Any] = {"user_id": user_id, "name": name, "dm": dm, "forge": forge}
        if options:
            body["options"] = options
        if permissions is not None:
            body["permissions"] = str(permissions)
        if files:
            body["files"] = {
                k: {"filename": f[0], "data": base64.b64encode(f[1]).decode()}
                | ({"content_type": f[2]} if len(f) > 2 else {})
                for k, f in files.items()
            }
        result: dict[str, Any] = await self._call("POST", "/_control/commands/invoke", body)
        return result

    async def press(
        self, user_id: int, message_id: int | str, custom_id: str, *, forge: bool = False
    ) -> dict[str, Any]:
        """User presses the button `custom_id` of a message (AssertionError if it has none,
        unless `forge`: a modified client can send any custom id)."""
        body = {
            "user_id": user_id,
            "message_id": str(message_id),
            "custom_id": custom_id,
            "forge": forge,
        }
        result: dict[str, Any] = await self._call("POST", "/_control/components/press", body)
        return result

    async def submit(
        self,
        user_id: int,
        interaction_id: str | int,
        values: dict[str, str],
        *,
        custom_id: str | None = None,
        forge: bool = False,
        permissions: int | None = None,
    ) -> dict[str, Any]:
        """User fills in and submits the modal the bot answered `interaction_id` with
        (`values`: text input custom id → text); `forge` sends any `custom_id`;
        `permissions` are the member's (a guild's Manage Server, say)."""
        body: dict[str, Any] = {
            "user_id": user_id,
            "interaction_id": str(interaction_id),
            "values": values,
            "forge": forge,
        }
        if custom_id is not None:
            body["custom_id"] = custom_id
        if permissions is not None:
            body["permissions"] = str(permissions)
        result: dict[str, Any] = await self._call("POST", "/_control/modals/submit", body)
        return result

    async def redeliver(self, interaction_id: str | int) -> dict[str, Any]:
        """Dispatch the interaction's INTERACTION_CREATE again (a gateway replay)."""
        result: dict[str, Any] = await self._call(
            "POST", f"/_control/interactions/{interaction_id}/redeliver"
        )
        return result

    # -------------------------------------------------------------------------- read

    async def interaction(self, interaction_id: str | int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/_control/interactions/{interaction_id}")
        return result

    async def messages(self, channel_id: int | str | None = None) -> list[Message]:
        cid = channel_id or self.channel_id
        result: list[Message] = await self._call("GET", f"/_control/channels/{cid}/messages")
        return result

    async def message(self, message_id: int | str) -> Message:
        result: Message = await self._call("GET", f"/_control/messages/{message_id}")
        return result

    async def attachment(self, attachment_id: int | str) -> bytes:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            r = await http.get(f"/_control/attachments/{attachment_id}")
        r.raise_for_status()
        return r.content

    async def calls(self, route: str | None = None) -> list[dict[str, Any]]:
        path = "/_control/calls" + (f"?route={route}" if route else "")
        result: list[dict[str, Any]] = await self._call("GET", path)
        return result

    async def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        path = "/_control/commands" + (f"?guild_id={guild_id}" if guild_id else "")
        result: list[dict[str, Any]] = await self._call("GET", path)
        return result

    async def gateway(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/_control/gateway")
        return result

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
    ) -> Any:
        """Poll an async `predicate()` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = await predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {what} after {timeout}s (last: {value!r})")
            await asyncio.sleep(0.05)

    # ----------------------------------------------------------------------- switches

    async def options(self, **switches: Any) -> dict[str, Any]:
        """ack_deadline, token_ttl, upload_limit, heartbeat_interval_ms, bucket_limit,
        bucket_window, global_per_second, honour_compress, ack_heartbeats,
        privileged_intents."""
        result: dict[str, Any] = await self._call("POST", "/_control/options", switches)
        return result

    async def rate_limit(
        self,
        route: str,
        *,
        count: int = 1,
        retry_after: float = 0.3,
        is_global: bool = False,
        via: bool = True,
    ) -> None:
        """The next `count` requests to `route` ("PATCH /webhooks/{application_id}/{token}/
        messages/{message_id}", or "*") answer 429."""
        await self._call(
            "POST",
            "/_control/rate_limits",
            {
                "route": route,
                "count": count,
                "retry_after": retry_after,
                "global": is_global,
                "via": via,
            },
        )

    async def drop(self, *, code: int = 4000, abrupt: bool = False, hold: bool = False) -> Any:
        """Drop the bot's gateway socket; `hold` keeps its reconnect waiting for `release`."""
        return await self._call(
            "POST", "/_control/gateway/drop", {"code": code, "abrupt": abrupt, "hold": hold}
        )

    async def release(self) -> None:
        await self._call("POST", "/_control/gateway/release")

    async def reconnect(self) -> None:
        await self._call("POST", "/_control/gateway/reconnect")

    async def request_heartbeat(self) -> dict[str, Any]:
        """Send op 1 to the bot: it must answer with a heartbeat at once."""
        result: dict[str, Any] = await self._call("POST", "/_control/gateway/heartbeat")
        return result

    async def reset(self) -> None:
        await self._call("POST", "/_control/reset")


def start_discord_standin(log_path: Path, token: str = DEFAULT_TOKEN) -> DiscordStandin:
    """Start the stand-in on a free port; returns once its control API answers."""
    url, proc = start_platform_standin("standins.discord", log_path, token)
    return DiscordStandin(url, token, proc)


class Bot:
    """A running discord.py client with its command tree, as a test drives it."""

    def __init__(self, client: discord.Client, tree: app_commands.CommandTree) -> None:
        self.client = client
        self.tree = tree
        self.errors: list[BaseException] = []
        self.resumed = asyncio.Event()


@asynccontextmanager
async def running_bot(
    standin: DiscordStandin,
    setup: Callable[[discord.Client, app_commands.CommandTree], Any] | None = None,
    *,
    intents: discord.Intents | None = None,
    sync: bool = True,
    heartbeat_timeout: float = 60.0,
) -> AsyncIterator[Bot]:
    """A real discord.py Client against the stand-in, from `on_ready` to `close()`.

    `setup(client, tree)` adds commands, views and listeners before the start; `sync`
    registers the tree's global commands once ready (what a bot does on first run)."""
    old_base, old_gateway = (
        discord.http.Route.BASE,
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
    )
    discord.http.Route.BASE = standin.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(standin.gateway_url)
    # discord.py waits `guild_ready_timeout` after the last GUILD_CREATE before on_ready; the
    # stand-in sends its one guild right after READY, so 0.2 s instead of 2 s is plenty.
    client = discord.Client(
        intents=intents or discord.Intents.default(),
        guild_ready_timeout=0.2,
        heartbeat_timeout=heartbeat_timeout,
    )
    tree = app_commands.CommandTree(client)
    bot = Bot(client, tree)
    ready = asyncio.Event()

    async def on_ready() -> None:
        ready.set()

    async def on_resumed() -> None:
        bot.resumed.set()

    client.event(on_ready)
    client.event(on_resumed)

    async def on_error(
        interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        bot.errors.append(error)

    tree.on_error = on_error  # type: ignore[method-assign,unused-ignore]
    if setup is not None:
        setup(client, tree)
    task = asyncio.create_task(client.start(standin.token))
    try:
        waiter = asyncio.ensure_future(ready.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=20, return_when=FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            task.result()  # raises the start error
        assert ready.is_set(), "discord.py did not reach on_ready"
        if sync:
            await tree.sync()
        yield bot
    finally:
        await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
