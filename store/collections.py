"""Collections and their pieces, with ownership and shares enforced here, in the repository.

Every read and write takes the acting user and folds the access rule into the MongoDB filter, so
a user without access gets `CollectionNotFound` — the same answer as for an id that does not
exist — and no code path can forget the check.

Edits are all-or-nothing: the new collection is built from the stored one plus every change,
validated as a whole (master prompt against the traits, supply against the combinations), and
written with one `replace_one` guarded by the revision it was read at.

**Edits after cooking started are refused, not versioned.** Once a cook has started, every piece
records the config hash it was made from and the cook plans the remaining pieces from the stored
config, so changing the master prompt, traits, rarities, template or supply would mix two
configurations in one collection. Name, description and shares stay editable. To try another
config, create a new collection (`stationthis collection create`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database

from domain.collections import (
    Choice,
    Collection,
    CollectionConfig,
    CollectionError,
    CollectionNotFound,
    Permission,
    Share,
    TraitType,
    TraitValue,
    validate_config,
)
from store.users import UserRepo

log = logging.getLogger(__name__)

PieceState = Literal[
    "planned", "pending_review", "approved", "rejected", "failed", "cancelled", "refused"
]
MADE_STATES = frozenset({"pending_review", "approved", "rejected"})
CONFIG_FIELDS = frozenset({"master_prompt", "template", "traits", "overrides", "allow_duplicates"})


class Piece(BaseModel):
    collection_id: str
    number: int
    traits: Choice = Field(default_factory=dict)
    combo: str = ""
    prompt: str = ""
    seed: int = 0
    attempt: int = 0  # 0 the first draw; more after a redraw (duplicate) or a regeneration
    config_hash: str = ""
    state: PieceState = "planned"
    workflow_id: str = ""  # the MakeImageWorkflow child that made it
    cook_id: str = ""
    blob_id: str | None = None
    price: int = 0
    refund: int = 0
    reason: str | None = None
    duplicate: bool = False
    updated_at: datetime | None = None


def next_cook_id(col: Collection, *, regenerate: bool = False) -> str:
    """The workflow id `start_cook` will give the collection's next cook (`cook-<id>-<n>`, or
    `cook-<id>-regen-<n>`), so a caller can take a resource under it before anything changes."""
    n = col.cooks + 1
    return f"cook-{col.id}-regen-{n}" if regenerate else f"cook-{col.id}-{n}"


def piece_id(collection_id: str, number: int) -> str:
    return f"{collection_id}:{number:06d}"


class CollectionRepo:
    def __init__(self, db: Database[Any], users: UserRepo) -> None:
        self.coll = db["collections"]
        self.pieces = db["pieces"]
        self.users = users

    def ensure_indexes(self) -> None:
        self.coll.create_index([("owner", ASCENDING)], name="owner")
        self.coll.create_index([("shares.user", ASCENDING)], name="shared_with")
        self.pieces.create_index(
            [("collection_id", ASCENDING), ("number", ASCENDING)], name="by_number"
        )
        self.pieces.create_index(
            [("collection_id", ASCENDING), ("state", ASCENDING)], name="by_state"
        )

    # ---- access -----------------------------------------------------------------------------

    def _uid(self, actor: str) -> str:
        return self.users.get(actor).id

    @staticmethod
    def _access(uid: str, need: Literal["view", "edit", "owner"]) -> dict[str, Any]:
        if need == "owner":
            return {"owner": uid}
        if need == "edit":
            share: dict[str, Any] = {"$elemMatch": {"user": uid, "permission": "edit"}}
            return {"$or": [{"owner": uid}, {"shares": share}]}
        return {"$or": [{"owner": uid}, {"shares.user": uid}]}

    def _find(self, cid: str, actor: str, need: Literal["view", "edit", "owner"]) -> Collection:
        doc = self.coll.find_one({"_id": cid, **self._access(self._uid(actor), need)})
        if doc is None:
            raise CollectionNotFound(cid)
        return _collection(doc)

    def get(self, cid: str, actor: str) -> Collection:
        """The collection if `actor` may see it; CollectionNotFound otherwise."""
        return self._find(cid, actor, "view")

    def get_for_edit(self, cid: str, actor: str) -> Collection:
        """The collection if `actor` owns it or has an edit share (needed to change or cook)."""
        return self._find(cid, actor, "edit")

    def get_system(self, cid: str) -> Collection:
        """For the cook's activities: the workflow was started by someone who passed the check."""
        doc = self.coll.find_one({"_id": cid})
        if doc is None:
            raise CollectionNotFound(cid)
        return _collection(doc)

    def list_for(self, actor: str) -> list[Collection]:
        docs = self.coll.find(self._access(self._uid(actor), "view")).sort("created_at", ASCENDING)
        return [_collection(d) for d in docs]

    # ---- writes -----------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        name: str,
        *,
        description: str = "",
        supply: int = 1,
        config: CollectionConfig | None = None,
    ) -> Collection:
        user = self.users.get(owner)
        if not name.strip():
            raise CollectionError("a collection needs a name")
        col = Collection(
            id=f"col{uuid.uuid4().hex[:8]}",
            name=name.strip(),
            description=description,
            supply=supply,
            owner=user.id,
            owner_identity=owner,
            config=config or CollectionConfig(),
        )
        _validate(col)
        doc = col.model_dump(exclude={"id"})
        doc.update(_id=col.id, created_at=datetime.now(UTC))
        self.coll.insert_one(doc)
        return col

    def update(self, cid: str, actor: str, changes: dict[str, Any]) -> Collection:
        """Apply every change or none. Keys: name, description, supply, and config fields
        (master_prompt, template, traits, overrides, allow_duplicates)."""
        current = self.get_for_edit(cid, actor)
        unknown = set(changes) - {"name", "description", "supply"} - CONFIG_FIELDS
        if unknown:
            raise CollectionError(f"cannot edit {', '.join(sorted(unknown))}")
        top = {k: v for k, v in changes.items() if k in ("name", "description", "supply")}
        conf = {k: v for k, v in changes.items() if k in CONFIG_FIELDS}
        try:
            config = CollectionConfig.model_validate({**current.config.model_dump(), **conf})
            updated = Collection.model_validate(
                {**current.model_dump(), **top, "config": config.model_dump()}
            )
        except ValidationError as err:
            raise CollectionError(_pydantic_message(err)) from None
        if "name" in top and not updated.name.strip():
            raise CollectionError("a collection needs a name")
        frozen = updated.config != current.config or updated.supply != current.supply
        if current.cook_started and frozen:
            raise CollectionError(
                "cooking has started: the prompt, traits, template and supply are frozen so every "
                "piece matches one config (name, description and shares can still change); "
                "create a new collection to try another config"
            )
        _validate(updated)
        return self._write(current, updated)

    def set_trait(
        self, cid: str, actor: str, trait: str, values: list[TraitValue] | None
    ) -> Collection:
        """Replace (or add) one trait type's values; None removes the trait type."""
        current = self.get_for_edit(cid, actor)
        traits = [t for t in current.config.traits if t.name != trait]
        if values is not None:
            existing = [t.name for t in current.config.traits]
            new = TraitType(name=trait, values=values)
            if trait in existing:
                traits.insert(existing.index(trait), new)
            else:
                traits.append(new)
        return self.update(cid, actor, {"traits": [t.model_dump() for t in traits]})

    def share(self, cid: str, actor: str, user: str, permission: Permission | None) -> Collection:
        """Owner only: give `user` view or edit access, or take it away (permission None)."""
        current = self._find(cid, actor, "owner")
        target = self.users.get(user).id
        shares = [s for s in current.shares if s.user != target]
        if permission is not None:
            if target == current.owner:
                raise CollectionError("the owner already has every permission")
            shares.append(Share(user=target, permission=permission))
        return self._write(current, current.model_copy(update={"shares": shares}))

    def start_cook(self, cid: str, actor: str, *, regenerate: bool = False) -> Collection:
        """Freeze the config and name the next cook workflow (`last_cook`):
        `cook-<id>-<n>`, or `cook-<id>-regen-<n>` for a regeneration."""
        current = self.get_for_edit(cid, actor)
        validate_config(current.config, current.supply, cooking=True)
        wid = next_cook_id(current, regenerate=regenerate)
        return self._write(
            current,
            current.model_copy(
                update={"cook_started": True, "cooks": current.cooks + 1, "last_cook": wid}
            ),
        )

    def _write(self, current: Collection, updated: Collection) -> Collection:
        doc = updated.model_dump(exclude={"id"})
        doc["rev"] = current.rev + 1
        res = self.coll.find_one_and_update(
            {"_id": current.id, "rev": current.rev},
            {"$set": doc},
            return_document=ReturnDocument.AFTER,
        )
        if res is None:
            raise CollectionError("the collection changed meanwhile; try again")
        return _collection(res)

    # ---- pieces -----------------------------------------------------------------------------

    def piece(self, cid: str, number: int) -> Piece | None:
        doc = self.pieces.find_one({"_id": piece_id(cid, number)})
        return _piece(doc) if doc else None

    def plan_piece(self, piece: Piece) -> Piece:
        """Store a planned piece once per number; a retry gets the first plan back."""
        doc = piece.model_dump()
        doc["updated_at"] = datetime.now(UTC)
        self.pieces.update_one(
            {"_id": piece_id(piece.collection_id, piece.number)},
            {"$setOnInsert": doc},
            upsert=True,
        )
        stored = self.piece(piece.collection_id, piece.number)
        assert stored is not None
        return stored

    def replan_piece(self, piece: Piece) -> Piece:
        """Overwrite a piece's plan (a regeneration: new seed, same traits)."""
        doc = piece.model_dump()
        doc["updated_at"] = datetime.now(UTC)
        self.pieces.replace_one(
            {"_id": piece_id(piece.collection_id, piece.number)}, doc, upsert=True
        )
        return piece

    def record_piece(self, cid: str, number: int, changes: dict[str, Any]) -> Piece:
        """Set `changes` on a planned piece and return it: an update by `_id`, then a read, not
        one `findAndModify`, which the embedded MongoDB-compatible server answers by scanning
        every piece ever cooked (issue 17). Only the piece's own workflow writes it."""
        changes = {**changes, "updated_at": datetime.now(UTC)}
        pid = piece_id(cid, number)
        if self.pieces.update_one({"_id": pid}, {"$set": changes}).matched_count == 0:
            raise CollectionError(f"piece {number} of {cid} was never planned")
        doc = self.pieces.find_one({"_id": pid})
        if doc is None:  # pragma: no cover - deleted between the two
            raise CollectionError(f"piece {number} of {cid} was never planned")
        return _piece(doc)

    def combos(self, cid: str, *, exclude: int | None = None) -> set[str]:
        """Combination keys already used by pieces that exist or are being made."""
        query: dict[str, Any] = {
            "collection_id": cid,
            "state": {"$in": ["planned", *MADE_STATES]},
        }
        if exclude is not None:
            query["number"] = {"$ne": exclude}
        return {str(d["combo"]) for d in self.pieces.find(query, {"combo": 1})}

    def list_pieces(self, cid: str, actor: str, *, states: list[str] | None = None) -> list[Piece]:
        self.get(cid, actor)
        query: dict[str, Any] = {"collection_id": cid}
        if states:
            query["state"] = {"$in": states}
        return [_piece(d) for d in self.pieces.find(query).sort("number", ASCENDING)]

    def review(self, cid: str, actor: str, numbers: list[int], verdict: str) -> list[Piece]:
        """Approve or reject made pieces (edit permission); other pieces are an error, and
        nothing changes unless every number is reviewable."""
        if verdict not in ("approved", "rejected"):
            raise CollectionError(f"unknown verdict {verdict!r}")
        self.get_for_edit(cid, actor)
        found = {
            int(d["number"]): d
            for d in self.pieces.find(
                {"collection_id": cid, "number": {"$in": numbers}}, {"number": 1, "state": 1}
            )
        }
        bad = [n for n in numbers if n not in found or found[n]["state"] not in MADE_STATES]
        if bad:
            raise CollectionError("not ready for review: " + ", ".join(f"piece {n}" for n in bad))
        self.pieces.update_many(
            {"collection_id": cid, "number": {"$in": numbers}},
            {"$set": {"state": verdict, "updated_at": datetime.now(UTC)}},
        )
        return [p for p in self.list_pieces(cid, actor) if p.number in set(numbers)]

    def counts(self, cid: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.pieces.find({"collection_id": cid}, {"state": 1}):
            out[str(d["state"])] = out.get(str(d["state"]), 0) + 1
        return out


def _validate(col: Collection) -> None:
    validate_config(col.config, col.supply)


def _pydantic_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())


def _collection(doc: dict[str, Any]) -> Collection:
    data = {k: v for k, v in doc.items() if k not in ("_id", "created_at")}
    return Collection.model_validate({"id": doc["_id"], **data})


def _piece(doc: dict[str, Any]) -> Piece:
    return Piece.model_validate({k: v for k, v in doc.items() if k != "_id"})
