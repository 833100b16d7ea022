"""Datasets and models in MongoDB: ownership (others get "not found"), limits, captions that
captioning never overwrites, and the LoRA file cache of a comfy worker."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comfy.lora_cache import LoraCache, LoraIntegrityError
from domain.errors import UserInputError
from domain.jobs import LoraFile
from domain.training import LoraModel, NotFound
from store.db import Stores


def test_a_dataset_of_another_user_is_not_found(stores: Stores) -> None:
    ds = stores.datasets.create("u1", "me", trigger_word="zxqq")
    assert stores.datasets.get("u1", "me").id == ds.id
    assert stores.datasets.get("u1", ds.id).name == "me"
    for action in (
        lambda: stores.datasets.get("u2", ds.id),
        lambda: stores.datasets.get("u2", "me"),
        lambda: stores.datasets.delete("u2", ds.id),
        lambda: stores.datasets.set_trigger_word("u2", ds.id, "zqabc"),
        lambda: stores.datasets.add_images("u2", ds.id, [("o", "p")]),
    ):
        with pytest.raises(NotFound):
            action()
    assert stores.datasets.get("u1", "me").trigger_word == "zxqq"


def test_dataset_names_are_unique_per_owner(stores: Stores) -> None:
    stores.datasets.create("u1", "me")
    stores.datasets.create("u2", "me")
    with pytest.raises(UserInputError, match="already have a dataset"):
        stores.datasets.create("u1", "me")
    renamed = stores.datasets.rename("u1", "me", "me2")
    assert renamed.name == "me2" and [d.name for d in stores.datasets.owned("u1")] == ["me2"]


def test_a_dataset_holds_at_most_20_images_and_adding_is_idempotent(stores: Stores) -> None:
    ds = stores.datasets.create("u1", "me")
    pairs = [(f"o{n}", f"p{n}") for n in range(18)]
    assert len(stores.datasets.add_images("u1", ds.id, pairs).images) == 18
    assert len(stores.datasets.add_images("u1", ds.id, pairs[:3]).images) == 18
    with pytest.raises(UserInputError, match="limit of 20"):
        stores.datasets.add_images("u1", ds.id, [("a", "x1"), ("b", "x2"), ("c", "x3")])
    ds2, removed = stores.datasets.remove_image("u1", ds.id, 1)
    assert removed.image_id == "p0" and len(ds2.images) == 17


def test_captioning_fills_only_missing_captions_and_adds_the_trigger_word(stores: Stores) -> None:
    ds = stores.datasets.create("u1", "me", trigger_word="zxqq")
    stores.datasets.add_images("u1", ds.id, [("o1", "p1"), ("o2", "p2")])
    stores.datasets.set_caption("u1", ds.id, 1, "my own words")
    after, written = stores.datasets.set_auto_captions(
        "u1", ds.id, {"p1": "a fox", "p2": "a dog"}, "zxqq"
    )
    assert written == 1
    assert [(i.caption, i.caption_source) for i in after.images] == [
        ("my own words", "user"),
        ("zxqq, a dog", "auto"),
    ]
    # Re-running captions only what is missing: nothing now.
    _, again = stores.datasets.set_auto_captions("u1", ds.id, {"p1": "x", "p2": "y"}, "zxqq")
    assert again == 0
    with pytest.raises(UserInputError, match="limit is 1000"):
        stores.datasets.set_caption("u1", ds.id, 2, "y" * 1001)


def test_models_are_private_until_published_and_created_once_per_workflow(
    stores: Stores,
) -> None:
    m = LoraModel(
        name="me", owner="u1", trigger_word="zxq", blob_id="b", filename="f", workflow_id="w1"
    )
    first = stores.models.create(m)
    assert stores.models.create(m).id == first.id
    assert [x.name for x in stores.models.usable("u2")] == []
    with pytest.raises(NotFound):
        stores.models.publish("u2", "me")
    stores.models.publish("u1", "me")
    assert [x.name for x in stores.models.owned("u2", include_public=True)] == ["me"]
    assert stores.models.free_name("u1", "me") == "me-2"
    with pytest.raises(NotFound):
        stores.models.delete("u2", "me")
    assert stores.models.delete("u1", "me").name == "me"


def _published(stores: Stores, owner: str, name: str, trigger: str) -> LoraModel:
    m = stores.models.create(
        LoraModel(
            name=name,
            owner=owner,
            trigger_word=trigger,
            blob_id=f"b-{owner}-{name}",
            filename="f",
            workflow_id=f"w-{owner}-{name}",
        )
    )
    return stores.models.publish(owner, m.id)


def test_a_public_model_is_in_a_users_prompts_only_once_added_to_their_list(
    stores: Stores,
) -> None:
    model = _published(stores, "u1", "Kitty", "zqcat")
    private = stores.models.create(
        LoraModel(name="secret", owner="u1", trigger_word="zqsec", blob_id="s", filename="f")
    )
    assert stores.models.usable("u2") == []
    # Tags may name any public model (case-insensitive), never a private one.
    named = stores.models.public_named(["kitty", "secret"], exclude_owner="u2")
    assert [m.id for m in named] == [model.id]
    assert stores.models.public_named(["kitty"], exclude_owner="u1") == []
    # Added by name or id, once; private models and one's own are not added.
    assert stores.models.add("u2", "Kitty").id == model.id
    assert stores.models.add("u2", model.id).id == model.id
    assert [m.id for m in stores.models.usable("u2")] == [model.id]
    with pytest.raises(NotFound):
        stores.models.add("u2", private.id)
    with pytest.raises(NotFound):
        stores.models.add("u2", "secret")
    with pytest.raises(UserInputError, match="your own model"):
        stores.models.add("u1", "Kitty")
    # Unpublished by its owner: out of the list's effect; removed: gone.
    stores.models.publish("u1", model.id, public=False)
    assert stores.models.usable("u2") == []
    assert stores.models.remove("u2", "Kitty").id == model.id
    with pytest.raises(NotFound):
        stores.models.remove("u2", "Kitty")


def test_a_name_two_public_models_share_is_added_by_id(stores: Stores) -> None:
    one = _published(stores, "u1", "style", "zqone")
    two = _published(stores, "u3", "style", "zqtwo")
    with pytest.raises(UserInputError, match=f"add one by id: {one.id}, {two.id}"):
        stores.models.add("u2", "style")
    assert stores.models.add("u2", two.id).id == two.id
    stores.models.delete("u3", two.id)
    assert stores.models.usable("u2") == [] and stores.models.picks.count_documents({}) == 0


def test_a_public_model_whose_trigger_word_one_of_yours_has_is_not_added(stores: Stores) -> None:
    _published(stores, "u1", "fox", "zqfox")
    stores.models.create(
        LoraModel(name="mine", owner="u2", trigger_word="ZQFOX", blob_id="m", filename="f")
    )
    with pytest.raises(UserInputError, match="<lora:fox>"):
        stores.models.add("u2", "fox")
    assert [m.name for m in stores.models.usable("u2")] == ["mine"]


def _lora(data: bytes, name: str) -> LoraFile:
    return LoraFile(
        name=name,
        filename=f"st/{name}.safetensors",
        blob_id=name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def test_the_lora_cache_copies_checks_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    blobs = {"a": b"A" * 400, "b": b"B" * 400, "c": b"C" * 400}
    fetched: list[str] = []

    def fetch(blob_id: str) -> bytes:
        fetched.append(blob_id)
        return blobs[blob_id]

    cache = LoraCache(tmp_path, fetch, max_bytes=1000)
    a, b, c = (_lora(blobs[k], k) for k in "abc")
    assert cache.ensure(a).read_bytes() == blobs["a"]
    cache.ensure(b)
    cache.ensure(a)  # a is now the most recently used, and not fetched again
    assert fetched == ["a", "b"]
    cache.ensure(c)  # over the cap: b (least recently used) goes
    assert set(cache.cached()) == {a.filename, c.filename}
    assert not (tmp_path / b.filename).exists() and (tmp_path / a.filename).exists()
    bad = a.model_copy(update={"filename": "st/bad.safetensors", "sha256": "0" * 64})
    with pytest.raises(LoraIntegrityError):
        cache.ensure(bad)
    assert not (tmp_path / "st/bad.safetensors").exists()
