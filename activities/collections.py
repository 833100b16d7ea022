"""Activities of the collection cook (queue `stationthis`), plus review and export helpers.

Planning and recording are keyed by (collection, piece number), so a retried activity or a
replayed workflow changes nothing the second time: `plan_collection_piece` stores a piece's plan
once and returns the stored one on a retry; `record_collection_piece` overwrites the piece's
outcome with the same values and reads what was charged and refunded from the ledger, by the
child workflow's id, instead of trusting counters.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import zipfile
from typing import Any

from temporalio import activity

from activities.jobs import JobActivities
from domain.collections import (
    BalanceInput,
    BalanceResult,
    Choice,
    Collection,
    CollectionError,
    CookNames,
    MasterPrompt,
    PlanPieceInput,
    PlanPieceResult,
    RecordPieceInput,
    RecordPieceResult,
    attributes,
    choose_traits,
    combination_count,
    combination_key,
    parse_master_prompt,
    piece_seed,
    render_prompt,
    trait_frequencies,
)
from domain.jobs import MakeImageRequest, PrepareInput
from domain.safety import PromptBlocked
from store.collections import MADE_STATES, Piece
from store.db import Stores

log = logging.getLogger(__name__)

# Redraws of a piece whose combination is taken before accepting a duplicate.
MAX_REDRAWS = 64
# Below this many combinations, a piece whose draws all collide takes a free one by enumeration.
MAX_ENUMERATED = 50_000


class CollectionActivities:
    def __init__(self, stores: Stores, planner: JobActivities | None = None) -> None:
        self.stores = stores
        # The make planner a piece's quote runs: the configured one (LoRA cap, checkpoints).
        self.planner = planner or JobActivities(stores)

    def all(self) -> list[Any]:
        return [self.plan_collection_piece, self.record_collection_piece, self.check_cook_balance]

    # ---- the cook ---------------------------------------------------------------------------

    @activity.defn(name=CookNames.PLAN_PIECE)
    def plan_collection_piece(self, inp: PlanPieceInput) -> PlanPieceResult:
        """Traits, prompt and seed of one piece; avoids taken combinations while it can."""
        repo = self.stores.collections
        col = repo.get_system(inp.collection_id)
        if inp.config_hash and col.config_hash != inp.config_hash:
            raise CollectionError("the collection's config changed since the cook started")
        existing = repo.piece(col.id, inp.number)
        if existing is not None and existing.cook_id == inp.cook_id:
            return _result(col, existing)  # a retry: the plan this cook already made
        if inp.regenerate:
            if existing is None:
                raise CollectionError(f"piece {inp.number} does not exist")
            attempt = existing.attempt + 1
            seed = piece_seed(col.id, inp.number, attempt)
            piece = existing.model_copy(
                update={
                    "seed": seed,
                    "attempt": attempt,
                    "state": "planned",
                    "cook_id": inp.cook_id,
                    "blob_id": None,
                    "reason": None,
                }
            )
            return _result(col, repo.replan_piece(piece))
        if existing is not None:
            if existing.state in MADE_STATES:
                return PlanPieceResult(number=inp.number, skip=True)
            # planned, failed or cancelled by an earlier cook: make it with the same plan
            return _result(
                col, repo.replan_piece(existing.model_copy(update={"cook_id": inp.cook_id}))
            )
        master = parse_master_prompt(col.config.master_prompt)
        used = repo.combos(col.id, exclude=inp.number)
        space = combination_count(col.config)
        attempt, choice, duplicate = (
            0,
            choose_traits(col.config, piece_seed(col.id, inp.number)),
            True,
        )
        if len(used) < space:
            for a in range(MAX_REDRAWS):
                c = choose_traits(col.config, piece_seed(col.id, inp.number, a), master)
                if combination_key(c) not in used:
                    attempt, choice, duplicate = a, c, False
                    break
            if duplicate and space <= MAX_ENUMERATED:
                free = _free_choices(col, master, used)
                if free:
                    seed = piece_seed(col.id, inp.number, MAX_REDRAWS)
                    attempt, choice, duplicate = MAX_REDRAWS, free[seed % len(free)], False
        elif not col.config.allow_duplicates:
            raise CollectionError(f"all {space} combinations are taken")
        note = None
        if duplicate:
            note = (
                f"piece {inp.number} repeats a combination: all {space} are taken"
                if len(used) >= space
                else f"piece {inp.number} repeats a combination: {MAX_REDRAWS} draws found no "
                "free one (rarities or exclusions make the rest unlikely)"
            )
            log.info("%s: %s", col.id, note)
        piece = Piece(
            collection_id=col.id,
            number=inp.number,
            traits=choice,
            combo=combination_key(choice),
            prompt=render_prompt(col.config, choice, master),
            seed=piece_seed(col.id, inp.number, attempt),
            attempt=attempt,
            config_hash=col.config_hash,
            cook_id=inp.cook_id,
            duplicate=duplicate,
        )
        stored = repo.plan_piece(piece)
        res = _result(col, stored)
        res.note = note
        return res

    @activity.defn(name=CookNames.RECORD_PIECE)
    def record_collection_piece(self, inp: RecordPieceInput) -> RecordPieceResult:
        totals = self.stores.ledger.job_totals(inp.child_id)
        self.stores.collections.record_piece(
            inp.collection_id,
            inp.number,
            {
                "state": inp.state,
                "workflow_id": inp.child_id,
                "blob_id": inp.blob_id,
                "reason": inp.reason,
                "price": totals.charged,
                "refund": totals.refunded,
            },
        )
        return RecordPieceResult(charged=totals.charged, refunded=totals.refunded)

    @activity.defn(name=CookNames.CHECK_BALANCE)
    def check_cook_balance(self, inp: BalanceInput) -> BalanceResult:
        balance = self.stores.ledger.balance(inp.user)
        return BalanceResult(balance=balance, enough=balance >= max(1, inp.need))

    # ---- helpers for the jobs client (not activities) ----------------------------------------

    def piece_request(self, col: Collection, user: str, prompt: str, seed: int) -> MakeImageRequest:
        return MakeImageRequest(
            user=user,
            platform="collection",
            prompt=prompt,
            template=col.config.template,
            overrides={**col.config.overrides, "seed": seed, "batch": 1},
        )

    def quote_piece(self, col: Collection, user: str) -> int:
        """The price of one piece for `user` (prepare's own checks: bad settings raise here).

        The operator's block list is checked here over the master prompt and every trait
        value, so a cook that would render a blocked term is refused before it starts (each
        piece's prepare checks its own prompt again)."""
        texts = [col.config.master_prompt]
        texts += [v.prompt or v.name for t in col.config.traits for v in t.values]
        if self.stores.safety.is_blocked(*texts):
            raise PromptBlocked("collection's master prompt or one of its trait values")
        master = parse_master_prompt(col.config.master_prompt)
        choice = choose_traits(col.config, piece_seed(col.id, 1), master)
        req = self.piece_request(col, user, render_prompt(col.config, choice, master) or "x", 1)
        return self.planner.plan_make_image(PrepareInput(workflow_id="", request=req)).price

    def export_zip(self, col: Collection, pieces: list[Piece]) -> tuple[bytes, dict[str, Any]]:
        """The export: `metadata/<n>.json` and `images/<n>.png` per approved piece, plus
        `summary.json` (trait frequencies). Returns the zip bytes and the summary."""
        approved = [p for p in pieces if p.state == "approved" and p.blob_id]
        freq = trait_frequencies(p.traits for p in approved)
        summary = {
            "collection": col.name,
            "collection_id": col.id,
            "config_hash": col.config_hash,
            "pieces": len(approved),
            "trait_frequencies": freq,
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in approved:
                assert p.blob_id is not None
                image = f"images/{p.number}.png"
                zf.writestr(image, self.stores.blobs.get(p.blob_id))
                meta = {
                    "name": f"{col.name} #{p.number}",
                    "description": col.description,
                    "image": image,
                    "attributes": attributes(p.traits),
                    "seed": p.seed,
                    "config_hash": p.config_hash,
                }
                zf.writestr(f"metadata/{p.number}.json", json.dumps(meta, indent=2))
            zf.writestr("summary.json", json.dumps(summary, indent=2))
        return buf.getvalue(), summary


def _free_choices(col: Collection, master: MasterPrompt, used: set[str]) -> list[Choice]:
    """Every combination not yet used that the exclusions allow, in a stable order."""
    traits = col.config.traits
    out: list[Choice] = []
    for combo in itertools.product(*(t.values for t in traits)):
        choice: Choice = {
            t.name: None if v.empty else v.name for t, v in zip(traits, combo, strict=True)
        }
        if any(sum(1 for n in g if choice.get(n)) > 1 for g in master.exclusions):
            continue
        if combination_key(choice) not in used:
            out.append(choice)
    return out


def _result(col: Collection, p: Piece) -> PlanPieceResult:
    return PlanPieceResult(
        number=p.number,
        prompt=p.prompt,
        seed=p.seed,
        template=col.config.template,
        overrides={**col.config.overrides, "seed": p.seed, "batch": 1},
        traits=p.traits,
        duplicate=p.duplicate,
    )
