"""Trained LoRA models (collection `models`); the files live in GridFS bucket `models`.

A model is created once per training workflow (`workflow_id` is unique), so a retried
`register_model` activity returns the first record. Only the owner sees, renames, deletes or
publishes a model; a public model is usable (read-only) by everyone.
"""

from __future__ import annotations

import logging
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
        """What a prompt of `owner` may use: their own models first, then public ones."""
        return self.owned(owner, include_public=True)

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
