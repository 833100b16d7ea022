"""Adversary suite, content safety (issue 19): the prompt block list cannot be talked around
and refuses before any quote; a chat's policy is changed only by that chat's admins (or, in a
private chat, its user within what the operator allows); the content check records every
decision, and an operator can list blocked jobs and release them.

MongoDB only (a fresh database per test); the classifier comes through its seam.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from pymongo.database import Database
from temporalio.testing import ActivityEnvironment

from activities.jobs import JobActivities
from activities.safety import SafetyActivities
from domain.errors import UserInputError
from domain.jobs import MakeImageRequest, PrepareInput, ReplyTarget, StoredOutput
from domain.safety import (
    Action,
    BlockEntry,
    CheckOutputsInput,
    NotChatAdmin,
    Policy,
    PromptBlocked,
    SafetyPlace,
    UnfilteredNotAllowed,
)
from media.classifier import MarkerClassifier, mark_unsafe
from services.collection_plans import quote_piece
from services.job_plans import MakePlanner
from standins.comfyui import render
from store.db import Stores
from tests.fixtures.stores import stores_with

USER = "telegram:4242"
SMALL: dict[str, int | float | str] = {"width": 512, "height": 512, "steps": 20}
GROUP_A = SafetyPlace(platform="telegram", chat_id="-1001", group=True)
GROUP_B = SafetyPlace(platform="telegram", chat_id="-1002", group=True)
PRIVATE = SafetyPlace(platform="telegram", chat_id="4242", group=False)


@pytest.fixture
def stores(mongo_db: Database[Any]) -> Iterator[Stores]:
    s = stores_with(mongo_db, USER)
    yield s


def plan_for(stores: Stores, prompt: str, reply: ReplyTarget | None = None) -> Any:
    request = MakeImageRequest(
        user=USER, platform="telegram", prompt=prompt, overrides=SMALL, reply=reply
    )
    return MakePlanner(stores).plan_make_image(PrepareInput(workflow_id="", request=request))


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# ---- the prompt block list -----------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "a forbiddenword in the snow",
        "a FORBIDDENWORD in the snow",
        "a ｆｏｒｂｉｄｄｅｎｗｏｒｄ in the snow",  # full-width letters
        "a forbidden\u200bword in the snow",  # a zero-width space inside
        "a cat, forbiddenword_style",
        "<lora:x:0.5> forbiddenword",
    ],
)
def test_a_blocked_word_is_refused_before_any_quote_however_it_is_written(
    stores: Stores, prompt: str
) -> None:
    stores.safety.add_word(BlockEntry(text="forbiddenword"))
    with pytest.raises(PromptBlocked) as caught:
        plan_for(stores, prompt)
    assert caught.value.code == "blocked_prompt"
    assert "nothing was charged" in caught.value.message


def test_a_word_inside_another_word_is_not_blocked(stores: Stores) -> None:
    stores.safety.add_word(BlockEntry(text="ass"))
    assert plan_for(stores, "a classic brass lamp").price > 0
    with pytest.raises(PromptBlocked):
        plan_for(stores, "an ass in a field")


def test_a_pattern_blocks_and_removing_it_allows_again(stores: Stores) -> None:
    entry = BlockEntry(text=r"gore\w*", pattern=True)
    stores.safety.add_word(entry)
    stores.safety.add_word(entry)  # twice is one entry
    assert stores.safety.list_words() == [entry]
    with pytest.raises(PromptBlocked):
        plan_for(stores, "very gorey scene")
    assert stores.safety.remove_word(entry)
    stores.safety._rules = None  # what BLOCK_LIST_TTL gives every other process
    assert plan_for(stores, "very gorey scene").price > 0


def test_a_pattern_that_does_not_compile_is_refused_and_not_stored(stores: Stores) -> None:
    with pytest.raises(UserInputError):
        stores.safety.add_word(BlockEntry(text="(unclosed", pattern=True))
    assert stores.safety.list_words() == []


def test_prepare_turns_a_blocked_prompt_into_a_free_refusal(stores: Stores) -> None:
    """The workflow's prepare: a refused plan, price 0, so the saga never charges."""
    stores.safety.add_word(BlockEntry(text="forbiddenword"))
    request = MakeImageRequest(user=USER, prompt="forbiddenword", overrides=SMALL)
    plan = JobActivities(stores).prepare_make_image(PrepareInput(workflow_id="w", request=request))
    assert plan.refused and plan.refused_code == "blocked_prompt" and plan.price == 0
    assert "nothing was charged" in plan.refused


# ---- who sets a chat's policy --------------------------------------------------------------


def test_a_non_admin_cannot_change_a_groups_policy(stores: Stores) -> None:
    stores.safety.choose(GROUP_A, Policy.BLOCK, by="telegram:1", is_admin=True)
    with pytest.raises(NotChatAdmin):
        stores.safety.choose(GROUP_A, Policy.OFF, by="telegram:2", is_admin=False)
    with pytest.raises(NotChatAdmin):
        stores.safety.choose(GROUP_A, None, by="telegram:2", is_admin=False)  # nor reset it
    assert stores.safety.chat_policy(GROUP_A) is Policy.BLOCK


def test_an_admin_of_another_chat_changes_only_that_chat(stores: Stores) -> None:
    stores.safety.choose(GROUP_A, Policy.BLOCK, by="telegram:1", is_admin=True)
    stores.safety.choose(GROUP_B, Policy.OFF, by="telegram:9", is_admin=True)
    assert stores.safety.chat_policy(GROUP_A) is Policy.BLOCK
    assert stores.safety.policy_for(GROUP_A)[0] is Policy.BLOCK


def test_a_private_chat_opts_out_only_if_the_operator_allows(stores: Stores) -> None:
    stores.safety.set_operator(policy="blur")
    with pytest.raises(UnfilteredNotAllowed):
        stores.safety.choose(PRIVATE, Policy.OFF, by=USER, is_admin=True)
    assert stores.safety.choose(PRIVATE, Policy.BLOCK, by=USER, is_admin=True) is Policy.BLOCK
    stores.safety.set_operator(allow_unfiltered=True)
    assert stores.safety.choose(PRIVATE, Policy.OFF, by=USER, is_admin=True) is Policy.OFF
    # Withdrawing the permission takes effect at once, without touching the chat's setting.
    stores.safety.set_operator(allow_unfiltered=False)
    assert stores.safety.policy_for(PRIVATE)[0] is Policy.BLUR


def test_the_place_policy_reaches_the_plan_and_off_adds_nothing(stores: Stores) -> None:
    reply = ReplyTarget(chat_id=GROUP_A.chat_id or "", group_chat=True)
    assert "safety" not in plan_for(stores, "a fox", reply).settings  # operator default off
    stores.safety.choose(GROUP_A, Policy.BLUR, by="telegram:1", is_admin=True)
    settings = plan_for(stores, "a fox", reply).settings
    assert settings["safety"] == "blur" and settings["safety_queue"] == "safety"
    other = ReplyTarget(chat_id=GROUP_B.chat_id or "", group_chat=True)
    assert "safety" not in plan_for(stores, "a fox", other).settings


# ---- the check, its audit trail, the operator's override -----------------------------------


def test_the_check_blocks_the_stand_ins_marked_image_and_records_every_decision(
    stores: Stores,
) -> None:
    plain = render.generate({"positive": "a fox"}, 128, 128)
    marked = mark_unsafe(render.generate({"positive": "a fox standin-unsafe"}, 128, 128))
    user = stores.users.get(USER)
    ids = [
        stores.blobs.put(png(im), f"{i}.png", "image/png", key=f"t:{i}")
        for i, im in enumerate([plain, marked])
    ]
    acts = SafetyActivities(stores, MarkerClassifier())
    result = ActivityEnvironment().run(
        acts.check_outputs,
        CheckOutputsInput(
            workflow_id="make-x",
            user_id=user.id,
            policy=Policy.BLOCK,
            threshold=0.5,
            outputs=[StoredOutput(blob_id=b) for b in ids],
        ),
    )
    assert [v.action for v in result.verdicts] == [Action.ALLOW, Action.BLOCK]
    decisions = stores.safety.decisions_of("make-x")
    assert {d["policy"] for d in decisions} == {"block"}
    assert {d["blob_id"]: d["action"] for d in decisions} == {ids[0]: "allow", ids[1]: "block"}
    [blocked] = stores.safety.blocked(user.id)
    assert blocked["job_id"] == "make-x" and blocked["score"] >= 0.5
    assert stores.safety.blocked("someone-else") == []
    assert stores.safety.released_blobs("make-x") == []
    [released] = stores.safety.release("make-x", by="operator:me")
    assert released["released_by"] == "operator:me"
    assert stores.safety.released_blobs("make-x") == [ids[1]]


def test_a_retried_check_records_one_decision_per_image(stores: Stores) -> None:
    user = stores.users.get(USER)
    blob = stores.blobs.put(png(mark_unsafe(render.generate({}, 64, 64))), "r.png", "image/png")
    acts = SafetyActivities(stores, MarkerClassifier())
    inp = CheckOutputsInput(
        workflow_id="make-r",
        user_id=user.id,
        policy=Policy.BLUR,
        outputs=[StoredOutput(blob_id=blob)],
    )
    env = ActivityEnvironment()
    first = env.run(acts.check_outputs, inp)
    second = env.run(acts.check_outputs, inp)
    assert first == second and first.verdicts[0].action is Action.BLUR
    assert len(stores.safety.decisions_of("make-r")) == 1


# ---- collections and training apply the same rules ---------------------------------------


def test_a_cook_whose_trait_value_is_blocked_is_refused_before_it_starts(stores: Stores) -> None:
    from domain.collections import Collection, CollectionConfig, TraitType, TraitValue

    config = CollectionConfig(
        master_prompt="a portrait of a [[animal]]",
        traits=[
            TraitType(
                name="animal",
                values=[TraitValue(name="fox"), TraitValue(name="x", prompt="forbiddenword")],
            )
        ],
        overrides=dict(SMALL),
    )
    col = Collection(id="c1", name="zoo", supply=4, owner="u", config=config)
    planner = MakePlanner(stores)
    assert quote_piece(planner, col, USER) > 0
    stores.safety.add_word(BlockEntry(text="forbiddenword"))
    with pytest.raises(PromptBlocked) as caught:
        quote_piece(planner, col, USER)
    assert "trait values" in caught.value.message


def test_each_piece_of_a_cook_is_checked_by_its_own_prepare(stores: Stores) -> None:
    """A piece is a make with platform `collection`: the same prepare, the same list."""
    stores.safety.add_word(BlockEntry(text="forbiddenword"))
    request = MakeImageRequest(
        user=USER, platform="collection", prompt="a forbiddenword fox", overrides=SMALL
    )
    plan = JobActivities(stores).prepare_make_image(PrepareInput(workflow_id="p", request=request))
    assert plan.refused_code == "blocked_prompt" and plan.price == 0


def test_training_is_refused_when_a_dataset_images_caption_is_blocked(stores: Stores) -> None:
    from domain.training import TrainPrepareInput, TrainRequest
    from services.training_plans import TrainingPlanner

    owner = stores.users.get(USER).id
    ds = stores.datasets.create(owner, "mine", trigger_word="zqxperson")
    stores.datasets.add_images(owner, ds.id, [(f"o{i}", f"p{i}") for i in range(4)])
    for i in range(1, 5):
        stores.datasets.set_caption(owner, ds.id, i, f"a photo number {i}")
    trainer = TrainingPlanner(stores)
    request = TrainRequest(user=USER, dataset="mine")
    assert trainer.plan_train_lora(TrainPrepareInput(workflow_id="", request=request)).price > 0
    stores.datasets.set_caption(owner, ds.id, 3, "a forbiddenword photo")
    stores.safety.add_word(BlockEntry(text="forbiddenword"))
    with pytest.raises(PromptBlocked) as caught:
        trainer.plan_train_lora(TrainPrepareInput(workflow_id="", request=request))
    assert "caption of dataset image 3" in caught.value.message


def test_a_media_job_in_a_group_carries_the_groups_policy(stores: Stores) -> None:
    from domain.jobs import MediaPrepareInput, MediaRequest
    from domain.queues import Routing, TaskQueues
    from services.job_plans import MediaPlanner

    owner = stores.users.get(USER).id
    source = stores.blobs.put(
        png(render.generate({}, 64, 64)), "s.png", "image/png", metadata={"user_id": owner}
    )
    stores.safety.choose(GROUP_A, Policy.BLOCK, by="telegram:1", is_admin=True)
    request = MediaRequest(
        user=USER,
        platform="telegram",
        kind="resize",
        source_image_id=source,
        params={"width": 32, "mode": "fit"},
        reply=ReplyTarget(chat_id=GROUP_A.chat_id or "", group_chat=True),
    )
    routing = Routing(queues=TaskQueues(safety="safety-x"))
    plan = MediaPlanner(stores, routing=routing).plan_media_job(
        MediaPrepareInput(workflow_id="", request=request)
    )
    assert plan.settings["safety"] == "block" and plan.settings["safety_queue"] == "safety-x"
