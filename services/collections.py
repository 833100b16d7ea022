"""Collections: create, edit, share, cook (quote, start, pause/resume/cancel, regenerate),
review and export.

The repository enforces access (no access reads as "not found"); the service adds the cook
workflow. Quotes and exports go through services/collection_plans.py, which the cook's
activities share.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain.collections import (
    Collection,
    CollectionConfig,
    CookControl,
    CookInput,
    CookProgress,
    Permission,
    parse_trait_lines,
    validate_config,
)
from domain.errors import InsufficientPoints, UserInputError
from domain.guild_rules import collections_refused
from domain.identity import normalise_identity
from domain.jobs import ReplyTarget
from domain.search_attributes import JOB_KIND, JOB_STATE, PLATFORM, USER_ID
from services.collection_plans import export_zip, quote_piece
from services.jobs import JobService, StartedJob
from store.blobs import OWNER_FIELD
from store.collections import MADE_STATES, Piece, next_cook_id
from store.storage import EXPORT
from workflows.cook_collection import CookCollectionWorkflow


@dataclass(frozen=True)
class CookQuote:
    collection_id: str
    piece_price: int
    pieces: int  # still to make
    total: int
    balance: int


@dataclass(frozen=True)
class CollectionExport:
    blob_id: str
    data: bytes
    summary: dict[str, Any]


class CollectionService(JobService):
    """Collections and their cooks."""

    async def create_collection(
        self,
        owner: str,
        name: str,
        *,
        description: str = "",
        supply: int = 1,
        config: CollectionConfig | None = None,
        platform: str = "cli",
        place: ReplyTarget | None = None,
    ) -> Collection:
        """A new collection; `place` is the chat the command came from (a guild's rules may
        refuse collections there)."""
        await self._check_place(platform, place)
        return await asyncio.to_thread(
            self.stores.collections.create,
            normalise_identity(owner),
            name,
            description=description,
            supply=supply,
            config=config,
        )

    async def collection(self, cid: str, user: str) -> Collection:
        return await asyncio.to_thread(self.stores.collections.get, cid, normalise_identity(user))

    async def collections(self, user: str) -> list[Collection]:
        return await asyncio.to_thread(self.stores.collections.list_for, normalise_identity(user))

    async def edit_collection(self, cid: str, user: str, changes: dict[str, Any]) -> Collection:
        """All of `changes` or none (CollectionError says what is wrong)."""
        return await asyncio.to_thread(
            self.stores.collections.update, cid, normalise_identity(user), changes
        )

    async def set_traits(self, cid: str, user: str, trait: str, lines: str | None) -> Collection:
        """Replace one trait type's values from `name|prompt|rarity` lines (None removes it)."""
        values = parse_trait_lines(lines) if lines is not None else None
        return await asyncio.to_thread(
            self.stores.collections.set_trait, cid, normalise_identity(user), trait, values
        )

    async def share_collection(
        self, cid: str, user: str, with_user: str, permission: Permission | None
    ) -> Collection:
        return await asyncio.to_thread(
            self.stores.collections.share,
            cid,
            normalise_identity(user),
            normalise_identity(with_user),
            permission,
        )

    async def quote_cook(self, cid: str, user: str) -> CookQuote:
        """What cooking would cost: the price per piece, pieces still to make, the total."""
        user = normalise_identity(user)
        col = await asyncio.to_thread(self.stores.collections.get_for_edit, cid, user)
        await asyncio.to_thread(validate_config, col.config, col.supply, cooking=True)
        price = await asyncio.to_thread(quote_piece, self._planner, col, user)
        counts = await asyncio.to_thread(self.stores.collections.counts, cid)
        made = sum(n for s, n in counts.items() if s in MADE_STATES)
        balance = await asyncio.to_thread(self.stores.ledger.balance, user)
        todo = max(0, col.supply - made)
        return CookQuote(col.id, price, todo, price * todo, balance)

    async def start_cook(
        self,
        cid: str,
        user: str,
        *,
        platform: str = "cli",
        in_flight: int = 3,
        continue_after: int = 200,
        balance_poll_seconds: float = 30.0,
        numbers: list[int] | None = None,
        place: ReplyTarget | None = None,
    ) -> StartedJob:
        """Start cooking (or, with `numbers`, regenerating those pieces: new seed, same traits).

        Refused at once, with nothing charged or frozen, when the config cannot be cooked, the
        balance does not cover one piece or the user's running-job slots are all taken; one
        cook at a time per collection.

        A cook is one job: it takes ONE of the user's `max_running_jobs` slots for its whole
        life (given back by the cook when it ends, cancelled included) and runs at most
        `in_flight` pieces at once, capped by `cook_max_in_flight`; its pieces take no slot.
        """
        user = normalise_identity(user)
        await self._check_place(platform, place)
        in_flight = max(1, min(in_flight, self.config.cook_max_in_flight))
        quote = await self.quote_cook(cid, user)
        if quote.balance < quote.piece_price:
            raise InsufficientPoints(quote.piece_price, quote.balance)
        col = await asyncio.to_thread(self.stores.collections.get_for_edit, cid, user)
        if col.last_cook and await self._cook_running(col.last_cook):
            raise UserInputError(
                f"a cook of {cid} is already running ({col.last_cook}): pause, resume or cancel it"
            )
        if numbers is not None:
            pieces = await asyncio.to_thread(self.stores.collections.list_pieces, cid, user)
            known = {p.number: p for p in pieces}
            bad = [n for n in numbers if n not in known or known[n].state == "planned"]
            if bad or not numbers:
                raise UserInputError(
                    "only made, rejected or failed pieces can be regenerated"
                    + (f": not {', '.join(map(str, bad))}" if bad else "")
                )
        # The slot is taken under the id the cook will get before the collection is touched:
        # a refused cook freezes nothing. The cook gives it back when it ends.
        owner = await asyncio.to_thread(self.stores.users.get, user)
        wid = next_cook_id(col, regenerate=numbers is not None)
        await self._take_slot(owner.id, wid)
        try:
            col = await asyncio.to_thread(
                self.stores.collections.start_cook, cid, user, regenerate=numbers is not None
            )
            if col.last_cook != wid:  # another start of this collection won the race
                raise UserInputError(f"a cook of {cid} was just started ({col.last_cook})")
            inp = CookInput(
                collection_id=cid,
                user=user,
                platform=platform,
                supply=col.supply,
                config_hash=col.config_hash,
                numbers=numbers,
                regenerate=numbers is not None,
                in_flight=in_flight,
                continue_after=continue_after,
                balance_poll_seconds=balance_poll_seconds,
                piece_price=quote.piece_price,
                user_id=owner.id,
                reply=place,
            )
            await self.temporal.start_workflow(
                CookCollectionWorkflow.run,
                inp,
                id=wid,
                task_queue=self.config.task_queues.workflows,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(USER_ID, user),
                        SearchAttributePair(PLATFORM, platform),
                        SearchAttributePair(JOB_KIND, "cook"),
                        SearchAttributePair(JOB_STATE, "running"),
                    ]
                ),
                static_summary=f"cook {col.name} ({cid}) for {user}",
                static_details=f"**collection** {col.name} ({cid})\n\n**supply** {col.supply}"
                f"\n\n**price per piece** {quote.piece_price}\n\n**in flight** {in_flight}",
            )
        except BaseException:
            await asyncio.to_thread(self.slots.release, owner.id, wid)
            raise
        await self.remember_job(wid, user)
        return StartedJob(wid, "cook", user, False, self.job_url(wid))

    async def _check_place(self, platform: str, place: ReplyTarget | None) -> None:
        """The one check of a guild's "no collections here" rule (domain/guild_rules.py), for
        every adapter: refused before anything is written, frozen or charged."""
        rules = await asyncio.to_thread(self.stores.guild_rules.for_reply, platform, place)
        if rules is not None and not rules.collections:
            raise collections_refused()

    async def _cook_running(self, wid: str) -> bool:
        try:
            desc = await self.temporal.get_workflow_handle(wid).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return desc.status == WorkflowExecutionStatus.RUNNING

    async def _cook_id(self, cid: str, user: str, *, edit: bool) -> str:
        repo = self.stores.collections
        get = repo.get_for_edit if edit else repo.get
        col = await asyncio.to_thread(get, cid, normalise_identity(user))
        if not col.last_cook:
            raise UserInputError(f"{cid} has not been cooked yet")
        return col.last_cook

    async def cook_progress(self, cid: str, user: str) -> CookProgress:
        """The latest cook's progress (live while it runs, its result once it has ended)."""
        wid = await self._cook_id(cid, user, edit=False)
        handle = self.temporal.get_workflow_handle(wid, result_type=CookProgress)
        progress: CookProgress = await handle.query(CookCollectionWorkflow.progress)
        return progress

    async def control_cook(
        self, cid: str, user: str, action: str, *, reason: str = ""
    ) -> CookProgress:
        """`pause`, `resume` or `cancel` the latest cook; a refusal says why."""
        if action not in ("pause", "resume", "cancel"):
            raise UserInputError(f"unknown cook action {action!r}")
        wid = await self._cook_id(cid, user, edit=True)
        handle = self.temporal.get_workflow_handle(wid, result_type=CookProgress)
        try:
            result: CookProgress = await handle.execute_update(
                action,
                CookControl(reason=reason, by=normalise_identity(user)),
                result_type=CookProgress,
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            msg = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            raise UserInputError(msg) from err
        except RPCError as err:
            raise UserInputError(f"the cook {wid} has ended") from err
        return result

    async def wait_cook(self, cid: str, user: str) -> CookProgress:
        wid = await self._cook_id(cid, user, edit=False)
        result: CookProgress = await self.temporal.get_workflow_handle(
            wid, result_type=CookProgress
        ).result()
        return result

    async def collection_pieces(
        self, cid: str, user: str, *, states: list[str] | None = None
    ) -> list[Piece]:
        return await asyncio.to_thread(
            self.stores.collections.list_pieces, cid, normalise_identity(user), states=states
        )

    async def review_pieces(
        self, cid: str, user: str, numbers: list[int], verdict: str
    ) -> list[Piece]:
        """`approved` or `rejected` for made pieces; all or none."""
        return await asyncio.to_thread(
            self.stores.collections.review, cid, normalise_identity(user), numbers, verdict
        )

    async def export_collection(self, cid: str, user: str) -> CollectionExport:
        """Zip the approved pieces (metadata JSON + image each, trait summary) into GridFS."""
        user = normalise_identity(user)
        col = await asyncio.to_thread(self.stores.collections.get, cid, user)
        pieces = await asyncio.to_thread(
            self.stores.collections.list_pieces, cid, user, states=["approved"]
        )
        if not pieces:
            raise UserInputError(f"no approved pieces in {cid} yet: review some first")
        data, summary = await asyncio.to_thread(export_zip, self.stores.blobs, col, pieces)
        digest = hashlib.sha256(data).hexdigest()
        now = datetime.now(UTC)
        blob = await asyncio.to_thread(
            self.stores.blobs.put,
            data,
            f"{cid}-export.zip",
            "application/zip",
            key=f"export:{cid}:{digest}",
            metadata={
                OWNER_FIELD: (await self._owner(user)).id,
                "kind": EXPORT,
                "fresh_at": now,
                "collection_id": cid,
                "pieces": len(pieces),
            },
        )
        # Kept `export_ttl` from the latest export of the same zip (store/storage.py).
        await asyncio.to_thread(self.stores.blobs.touch, blob, now)
        return CollectionExport(blob, data, summary)
