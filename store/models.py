"""Trained LoRA models (collection `models`); the files live in GridFS bucket `models`.

A model is created once per training workflow (`workflow_id` is unique), so a retried
`register_model` activity returns the first record. Only the owner sees, renames, deletes or
publishes a model. A public model is usable (read-only) by everyone, but opt-in: another
user's prompt gets it only when it names it (`<lora:NAME>`) or when that user added it to their
own list (collection `model_picks`, one row per user and model), so publishing never puts a
model into strangers' prompts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from domain.errors import UserInputError
from domain.training import LoraModel, NotFound, check_name

log = logging.getLogger(__name__)


class ModelRepo:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["models"]
        self.picks = db["model_picks"]

    def ensure_indexes(self) -> None:
        self.coll.create_index(
            [("owner", ASCENDING), ("name", ASCENDING)], unique=True, name="owner_name"
        )
        self.coll.create_index(
            [("workflow_id", ASCENDING)],
            unique=True,
            partialFilterExpression={"workflow_id": {"$type": "string", "$gt": ""}},
            name="workflow_unique",
        )
        self.coll.create_index([("public", ASCENDING)], name="public")
        self.picks.create_index(
            [("user", ASCENDING), ("model_id", ASCENDING)], unique=True, name="user_model"
        )

    def _query(self, owner: str, ref: str) -> dict[str, Any]:
        try:
            return {"owner": owner, "$or": [{"_id": ObjectId(ref)}, {"name": ref}]}
        except (InvalidId, TypeError):
            return {"owner": owner, "name": ref}

    def create(self, model: LoraModel) -> LoraModel:
        """Insert once per workflow; the same workflow id returns the stored record."""
        if model.workflow_id:
            found = self.coll.find_one({"workflow_id": model.workflow_id})
            if found is not None:
                return _model(found)
        doc = model.model_dump(exclude={"id"})
        doc["created_at"] = doc.get("created_at") or datetime.now(UTC)
        try:
            res = self.coll.insert_one(doc)
        except DuplicateKeyError:
            found = self.coll.find_one({"workflow_id": model.workflow_id})
            if found is not None and model.workflow_id:
                return _model(found)
            raise UserInputError(f"you already have a model named {model.name!r}") from None
        doc["_id"] = res.inserted_id
        return _model(doc)

    def get(self, owner: str, ref: str) -> LoraModel:
        """One of the owner's models by id or name."""
        doc = self.coll.find_one(self._query(owner, ref))
        if doc is None:
            raise NotFound(f"no model {ref!r}")
        return _model(doc)

    def owned(self, owner: str, *, include_public: bool = False) -> list[LoraModel]:
        own = [_model(d) for d in self.coll.find({"owner": owner}).sort("name", ASCENDING)]
        if not include_public:
            return own
        others = self.coll.find({"public": True, "owner": {"$ne": owner}}).sort("name", ASCENDING)
        return own + [_model(d) for d in others]

    def usable(self, owner: str) -> list[LoraModel]:
        """What a prompt of `owner` applies by trigger word: their own models first, then the
        public ones they added to their list (still public: unpublished ones drop out)."""
        return self.owned(owner) + self.added(owner)

    def added(self, user: str) -> list[LoraModel]:
        """Other users' public models `user` added to their list, by name."""
        ids = [p["model_id"] for p in self.picks.find({"user": user}, {"model_id": 1})]
        if not ids:
            return []
        found = self.coll.find({"_id": {"$in": ids}, "public": True, "owner": {"$ne": user}})
        return [_model(d) for d in found.sort("name", ASCENDING)]

    def public_named(self, names: Iterable[str], *, exclude_owner: str) -> list[LoraModel]:
        """Other owners' public models whose name is one of `names` (case-insensitive): what
        `<lora:NAME>` tags may name."""
        patterns = [re.compile(f"^{re.escape(n)}$", re.IGNORECASE) for n in dict.fromkeys(names)]
        if not patterns:
            return []
        query = {"public": True, "owner": {"$ne": exclude_owner}, "name": {"$in": patterns}}
        return [_model(d) for d in self.coll.find(query).sort("_id", ASCENDING)]

    def add(self, user: str, ref: str) -> LoraModel:
        """Add another user's public model to `user`'s list, by id or by name (a name two
        public models share must be given as an id). Adding twice changes nothing."""
        query: dict[str, Any] = {"public": True, "owner": {"$ne": user}}
        try:
            query["_id"] = ObjectId(ref)
        except (InvalidId, TypeError):
            query["name"] = ref
        found = [_model(d) for d in self.coll.find(query).sort("_id", ASCENDING).limit(10)]
        if not found:
            if self.coll.count_documents({"owner": user, "name": ref}, limit=1):
                raise UserInputError(
                    f"{ref!r} is your own model: it applies by its trigger word already"
                )
            raise NotFound(f"no public model {ref!r}")
        if len(found) > 1:
            ids = ", ".join(m.id for m in found)
            raise UserInputError(f"several public models are named {ref!r}; add one by id: {ids}")
        model = found[0]
        for m in self.usable(user):
            if m.id != model.id and m.trigger_word.lower() == model.trigger_word.lower():
                raise UserInputError(
                    f"{model.name!r} has the trigger word {m.trigger_word!r} of your model "
                    f"{m.name!r}; use it without adding it: <lora:{model.name}>"
                )
        self.picks.update_one(
            {"user": user, "model_id": ObjectId(model.id)},
            {"$setOnInsert": {"added_at": datetime.now(UTC)}},
            upsert=True,
        )
        return model

    def remove(self, user: str, ref: str) -> LoraModel:
        """Take a model off `user`'s list, by id or name; NotFound when it is not on it."""
        for model in self._listed(user):
            if ref in (model.id, model.name):
                self.picks.delete_one({"user": user, "model_id": ObjectId(model.id)})
                return model
        raise NotFound(f"no model {ref!r} in your list")

    def _listed(self, user: str) -> list[LoraModel]:
        """Every model on `user`'s list, public or not any more (so it can still be removed)."""
        ids = [p["model_id"] for p in self.picks.find({"user": user}, {"model_id": 1})]
        return [_model(d) for d in self.coll.find({"_id": {"$in": ids}})] if ids else []

    def name_free(self, owner: str, name: str) -> bool:
        return self.coll.count_documents({"owner": owner, "name": name}, limit=1) == 0

    def free_name(self, owner: str, name: str) -> str:
        """`name`, or `name-2`, `name-3`, … : the first the owner has not used."""
        if self.name_free(owner, name):
            return name
        n = 2
        while not self.name_free(owner, f"{name}-{n}"):
            n += 1
        return f"{name}-{n}"

    def rename(self, owner: str, ref: str, new_name: str) -> LoraModel:
        new_name = check_name(new_name, "model")
        try:
            return self._update(owner, ref, {"$set": {"name": new_name}})
        except DuplicateKeyError:
            raise UserInputError(f"you already have a model named {new_name!r}") from None

    def publish(self, owner: str, ref: str, public: bool = True) -> LoraModel:
        return self._update(owner, ref, {"$set": {"public": public}})

    def delete(self, owner: str, ref: str) -> LoraModel:
        doc = self.coll.find_one_and_delete(self._query(owner, ref))
        if doc is None:
            raise NotFound(f"no model {ref!r}")
        self.picks.delete_many({"model_id": doc["_id"]})
        return _model(doc)

    def _update(self, owner: str, ref: str, update: dict[str, Any]) -> LoraModel:
        doc = self.coll.find_one_and_update(
            self._query(owner, ref), update, return_document=ReturnDocument.AFTER
        )
        if doc is None:
            raise NotFound(f"no model {ref!r}")
        return _model(doc)


def _model(doc: dict[str, Any]) -> LoraModel:
    data = {k: v for k, v in doc.items() if k != "_id"}
    return LoraModel.model_validate({**data, "id": str(doc["_id"])})
