"""Collections in MongoDB: access enforced by the repository, all-or-nothing edits, frozen
config once cooking started, pieces planned once and reviewed."""

from __future__ import annotations

import pytest

from domain.collections import (
    CollectionConfig,
    CollectionError,
    CollectionNotFound,
    parse_trait_lines,
)
from store.collections import Piece
from store.db import Stores
from tests.store.conftest import MAIN_USER

OTHER = "telegram:111"
FRIEND = "telegram:222"


@pytest.fixture
def users(stores: Stores) -> Stores:
    for who in (MAIN_USER, OTHER, FRIEND):
        stores.users.get_or_create(who)
    return stores


def make(stores: Stores) -> str:
    repo = stores.collections
    col = repo.create(MAIN_USER, "Foxes", supply=4, description="sly")
    repo.set_trait(col.id, MAIN_USER, "Hat", parse_trait_lines("top|top hat\ncap|a cap|2"))
    repo.set_trait(col.id, MAIN_USER, "Place", parse_trait_lines("snow\nforest"))
    repo.update(col.id, MAIN_USER, {"master_prompt": "a fox [wearing [[Hat]]] in [[Place]]"})
    return col.id


def test_another_users_collection_is_not_found_for_every_operation(users: Stores) -> None:
    cid = make(users)
    repo = users.collections
    calls = [
        lambda: repo.get(cid, OTHER),
        lambda: repo.update(cid, OTHER, {"name": "mine"}),
        lambda: repo.set_trait(cid, OTHER, "Hat", None),
        lambda: repo.share(cid, OTHER, OTHER, "edit"),
        lambda: repo.start_cook(cid, OTHER),
        lambda: repo.list_pieces(cid, OTHER),
    ]
    for call in calls:
        with pytest.raises(CollectionNotFound, match="not found"):
            call()
    assert repo.list_for(OTHER) == []
    assert repo.get(cid, MAIN_USER).name == "Foxes"


def test_a_view_share_can_read_and_an_edit_share_can_change(users: Stores) -> None:
    cid = make(users)
    repo = users.collections
    repo.share(cid, MAIN_USER, OTHER, "view")
    assert repo.get(cid, OTHER).id == cid
    with pytest.raises(CollectionNotFound):
        repo.update(cid, OTHER, {"name": "x"})
    repo.share(cid, MAIN_USER, FRIEND, "edit")
    assert repo.update(cid, FRIEND, {"name": "Foxes 2"}).name == "Foxes 2"
    with pytest.raises(CollectionNotFound):  # sharing stays the owner's
        repo.share(cid, FRIEND, OTHER, "edit")
    repo.share(cid, MAIN_USER, OTHER, None)
    with pytest.raises(CollectionNotFound):
        repo.get(cid, OTHER)


def test_a_bad_edit_changes_nothing(users: Stores) -> None:
    cid = make(users)
    repo = users.collections
    before = repo.get(cid, MAIN_USER)
    with pytest.raises(CollectionError, match="unknown trait 'Mask'"):
        repo.update(cid, MAIN_USER, {"name": "Renamed", "master_prompt": "a fox [[Mask]]"})
    with pytest.raises(CollectionError, match="never closed"):
        repo.update(cid, MAIN_USER, {"supply": 3, "master_prompt": "a fox [[[Hat]]"})
    with pytest.raises(CollectionError, match="Hat"):  # still used by the master prompt
        repo.set_trait(cid, MAIN_USER, "Hat", None)
    assert repo.get(cid, MAIN_USER) == before


def test_cooking_freezes_the_config_but_not_the_name(users: Stores) -> None:
    cid = make(users)
    repo = users.collections
    col = repo.start_cook(cid, MAIN_USER)
    assert col.cook_started and col.last_cook == f"cook-{cid}-1"
    assert repo.update(cid, MAIN_USER, {"name": "Renamed"}).config_hash == col.config_hash
    with pytest.raises(CollectionError, match="cooking has started"):
        repo.update(cid, MAIN_USER, {"master_prompt": "a fox in [[Place]]"})
    with pytest.raises(CollectionError, match="cooking has started"):
        repo.update(cid, MAIN_USER, {"supply": 5})


def test_a_cook_needs_no_more_supply_than_combinations(users: Stores) -> None:
    cid = make(users)
    repo = users.collections
    repo.update(cid, MAIN_USER, {"supply": 5})
    with pytest.raises(CollectionError, match="more than the 4 possible combinations"):
        repo.start_cook(cid, MAIN_USER)
    assert not repo.get(cid, MAIN_USER).cook_started


def test_a_piece_is_planned_once_and_reviewed_all_or_nothing(users: Stores) -> None:
    cid = make(users)
    repo = users.collections
    first = repo.plan_piece(Piece(collection_id=cid, number=1, seed=1, cook_id="c1"))
    again = repo.plan_piece(Piece(collection_id=cid, number=1, seed=2, cook_id="c2"))
    assert again.seed == first.seed == 1
    repo.record_piece(cid, 1, {"state": "pending_review", "blob_id": "b1"})
    repo.plan_piece(Piece(collection_id=cid, number=2, seed=3))
    with pytest.raises(CollectionError, match="piece 2"):
        repo.review(cid, MAIN_USER, [1, 2], "approved")
    assert repo.piece(cid, 1) is not None and repo.piece(cid, 1).state == "pending_review"  # type: ignore[union-attr]
    repo.review(cid, MAIN_USER, [1], "approved")
    assert [p.state for p in repo.list_pieces(cid, MAIN_USER)] == ["approved", "planned"]


def test_create_refuses_a_bad_config(users: Stores) -> None:
    with pytest.raises(CollectionError, match="unknown trait 'Hat'"):
        users.collections.create(MAIN_USER, "x", config=CollectionConfig(master_prompt="a [[Hat]]"))
    assert users.collections.list_for(MAIN_USER) == []
