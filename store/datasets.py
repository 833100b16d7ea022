"""LoRA training datasets (collection `datasets`), one document per dataset.

Ownership is part of every query: a dataset of another user is "not found", never "forbidden",
so its existence is not revealed. Updates are single-document atomic updates whose filter also
states the precondition (fewer than 20 images, caption still empty), so two concurrent writes
cannot break a rule that was checked before either of them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from domain.errors import UserInputError
from domain.training import (
    MAX_IMAGES,
    Dataset,
    DatasetImage,
    NotFound,
    caption_with_trigger,
    check_caption,
    check_name,
    check_trigger_word,
)

log = logging.getLogger(__name__)


class DatasetRepo:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["datasets"]

    def ensure_indexes(self) -> None:
        self.coll.create_index(
            [("owner", ASCENDING), ("name", ASCENDING)], unique=True, name="owner_name"
        )

    # ---- reading ---------------------------------------------------------------------------

    def _query(self, owner: str, ref: str) -> dict[str, Any]:
        """Match a dataset of `owner` by id or by name."""
        try:
            return {"owner": owner, "$or": [{"_id": ObjectId(ref)}, {"name": ref}]}
        except (InvalidId, TypeError):
            return {"owner": owner, "name": ref}

    def get(self, owner: str, ref: str) -> Dataset:
        doc = self.coll.find_one(self._query(owner, ref))
        if doc is None:
            raise NotFound(f"no dataset {ref!r}")
        return _dataset(doc)

    def owned(self, owner: str) -> list[Dataset]:
        return [_dataset(d) for d in self.coll.find({"owner": owner}).sort("name", ASCENDING)]

    # ---- writing ---------------------------------------------------------------------------

    def create(
        self, owner: str, name: str, *, trigger_word: str = "", family: str = "sdxl"
    ) -> Dataset:
        name = check_name(name)
        if trigger_word:
            trigger_word = check_trigger_word(trigger_word)
        doc = {
            "owner": owner,
            "name": name,
            "trigger_word": trigger_word,
            "family": family,
            "images": [],
            "created_at": datetime.now(UTC),
        }
        try:
            res = self.coll.insert_one(doc)
        except DuplicateKeyError:
            raise UserInputError(f"you already have a dataset named {name!r}") from None
        doc["_id"] = res.inserted_id
        return _dataset(doc)

    def rename(self, owner: str, ref: str, new_name: str) -> Dataset:
        new_name = check_name(new_name)
        try:
            return self._update(owner, ref, {"$set": {"name": new_name}})
        except DuplicateKeyError:
            raise UserInputError(f"you already have a dataset named {new_name!r}") from None

    def delete(self, owner: str, ref: str) -> Dataset:
        doc = self.coll.find_one_and_delete(self._query(owner, ref))
        if doc is None:
            raise NotFound(f"no dataset {ref!r}")
        return _dataset(doc)

    def set_trigger_word(self, owner: str, ref: str, word: str) -> Dataset:
        return self._update(owner, ref, {"$set": {"trigger_word": check_trigger_word(word)}})

    def add_images(self, owner: str, ref: str, images: list[tuple[str, str]]) -> Dataset:
        """Append (original id, prepared id) pairs; refused whole above 20 images.

        Idempotent: a prepared id already in the dataset is not added again (a retried
        activity adds nothing twice).
        """
        ds = self.get(owner, ref)
        have = {im.image_id for im in ds.images}
        new = [
            DatasetImage(image_id=prep, original_id=orig).model_dump()
            for orig, prep in images
            if prep not in have
        ]
        if not new:
            return ds
        if len(ds.images) + len(new) > MAX_IMAGES:
            raise UserInputError(
                f"the dataset has {len(ds.images)} images; adding {len(new)} would exceed the "
                f"limit of {MAX_IMAGES}"
            )
        doc = self.coll.find_one_and_update(
            {
                "_id": ObjectId(ds.id),
                "owner": owner,
                f"images.{MAX_IMAGES - len(new)}": {"$exists": False},
            },
            {"$push": {"images": {"$each": new}}, "$inc": {"revision": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise UserInputError(f"the dataset would exceed the limit of {MAX_IMAGES} images")
        return _dataset(doc)

    def remove_image(self, owner: str, ref: str, image: str | int) -> tuple[Dataset, DatasetImage]:
        """Remove one image by its id or its 1-based position; returns the removed entry."""
        ds = self.get(owner, ref)
        target = _find_image(ds, image)
        doc = self.coll.find_one_and_update(
            {"_id": ObjectId(ds.id), "owner": owner},
            {"$pull": {"images": {"image_id": target.image_id}}, "$inc": {"revision": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise NotFound(f"no dataset {ref!r}")
        return _dataset(doc), target

    def set_caption(self, owner: str, ref: str, image: str | int, caption: str) -> Dataset:
        """A caption the user typed: kept as typed (never overwritten by captioning)."""
        caption = check_caption(caption)
        target = _find_image(self.get(owner, ref), image)

        def change(images: list[dict[str, Any]]) -> int:
            for im in images:
                if im["image_id"] == target.image_id:
                    im["caption"] = caption
                    im["caption_source"] = "user" if caption else ""
                    return 1
            raise NotFound(f"no image {image!r} in dataset {ref!r}")

        ds, _ = self._swap_images(owner, ref, change)
        return ds

    def set_auto_captions(
        self, owner: str, ref: str, captions: Mapping[str, str], trigger_word: str
    ) -> tuple[Dataset, int]:
        """Generated captions, with the trigger word added, only where an image has none.

        The write is a compare-and-set on the whole image list, so a caption the user typed
        meanwhile wins (the swap is retried against the new list). Returns the dataset and how
        many captions were written.
        """
        prepared = {
            k: check_caption(caption_with_trigger(v, trigger_word))[:1000]
            for k, v in captions.items()
        }

        def change(images: list[dict[str, Any]]) -> int:
            written = 0
            for im in images:
                text = prepared.get(im["image_id"])
                if text and not str(im.get("caption", "")).strip():
                    im["caption"] = text
                    im["caption_source"] = "auto"
                    written += 1
            return written

        return self._swap_images(owner, ref, change)

    def _swap_images(
        self, owner: str, ref: str, change: Callable[[list[dict[str, Any]]], int]
    ) -> tuple[Dataset, int]:
        """Apply `change` to the image list with compare-and-set, retrying on a race."""
        for _attempt in range(20):
            doc = self.coll.find_one(self._query(owner, ref))
            if doc is None:
                raise NotFound(f"no dataset {ref!r}")
            old = doc.get("images", [])
            new = copy.deepcopy(old)
            count = change(new)
            if count == 0:
                return _dataset(doc), 0
            res = self.coll.update_one(
                {"_id": doc["_id"], "owner": owner, "images": old},
                {"$set": {"images": new}, "$inc": {"revision": 1}},
            )
            if res.modified_count == 1:
                revision = int(doc.get("revision", 0)) + 1
                return _dataset({**doc, "images": new, "revision": revision}), count
        raise RuntimeError(f"dataset {ref!r} kept changing; try again")

    def _update(self, owner: str, ref: str, update: dict[str, Any]) -> Dataset:
        doc = self.coll.find_one_and_update(
            self._query(owner, ref), update, return_document=ReturnDocument.AFTER
        )
        if doc is None:
            raise NotFound(f"no dataset {ref!r}")
        return _dataset(doc)


def _find_image(ds: Dataset, image: str | int) -> DatasetImage:
    if isinstance(image, int) or (isinstance(image, str) and image.isdigit() and len(image) < 4):
        n = int(image)
        if not 1 <= n <= len(ds.images):
            raise NotFound(f"no image {n} in dataset {ds.name!r} (it has {len(ds.images)})")
        return ds.images[n - 1]
    for im in ds.images:
        if im.image_id == image:
            return im
    raise NotFound(f"no image {image!r} in dataset {ds.name!r}")


def _dataset(doc: dict[str, Any]) -> Dataset:
    data = {k: v for k, v in doc.items() if k != "_id"}
    return Dataset.model_validate({**data, "id": str(doc["_id"])})
