"""A published model cannot hijack other people's prompts, a prompt cannot stack LoRAs without
bound, and the `checkpoint` and `negative` settings cannot walk around the price or the prompt
rules (issue 13, items 2, 5 and 10).

Most stories run prepare's own planning (`MakePlanner.plan_make_image`, what the jobs client
runs before it starts anything and the workflow's first activity runs again) over a real
MongoDB-compatible server: what is asserted is the graph that would be sent to ComfyUI and the
price that would be charged. The last story goes through the real stack: CLI, jobs client,
Temporal.
"""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.database import Database

from activities.jobs import JobActivities
from adapters.jobs import JobsClient
from domain.errors import SettingsError, UserInputError
from domain.jobs import JobPlan, MakeImageRequest, PrepareInput
from domain.templates import Template
from domain.training import LoraModel, NotFound
from services.job_plans import MakePlanner
from store.db import Stores
from tests.fixtures.devstack import Stack
from tests.fixtures.stores import stores_with

A = "telegram:1001"
B = "telegram:2002"
SDXL = "sdxl-base-1.0.safetensors"
FLUX = "flux1-dev.safetensors"
SMALL = {"width": 512, "height": 512, "steps": 20}  # price: base + 1 tile * 5


@pytest.fixture
def stores(mongo_db: Database[Any]) -> Iterator[Stores]:
    s = stores_with(mongo_db, A, B)
    yield s


def plan(
    stores: Stores,
    user: str,
    prompt: str,
    max_loras: int = 3,
    template: str | None = None,
    **overrides: Any,
) -> JobPlan:
    """What prepare decides for `user`'s prompt (the jobs client runs the same before a start)."""
    request = MakeImageRequest(
        user=user, prompt=prompt, template=template, overrides={**SMALL, **overrides}
    )
    planner = MakePlanner(stores, max_loras=max_loras)
    return planner.plan_make_image(PrepareInput(workflow_id="", request=request))


def lora_names(p: JobPlan) -> list[str]:
    """The LoRA files of the graph that would be sent to ComfyUI."""
    return [
        node["inputs"]["lora_name"]
        for work in p.comfy
        for node in work.graph.values()
        if node["class_type"] == "LoraLoader"
    ]


def model(stores: Stores, owner: str, name: str, trigger: str, *, public: bool) -> LoraModel:
    user = stores.users.get(owner)
    m = stores.models.create(
        LoraModel(
            name=name,
            owner=user.id,
            trigger_word=trigger,
            blob_id=f"blob-{uuid.uuid4().hex}",
            filename=f"st/{name}-{uuid.uuid4().hex[:8]}.safetensors",
            sha256="ab" * 32,
        )
    )
    return stores.models.publish(user.id, m.id, public) if public else m


# ---- item 2: models are opt-in --------------------------------------------------------------


@pytest.mark.parametrize("word", ["cat", "of", "in", "the", "castle"])
def test_user_a_cannot_give_a_model_a_trigger_word_that_occurs_by_chance(
    stores: Stores, word: str
) -> None:
    a = stores.users.get(A)
    with pytest.raises(UserInputError, match="such as"):
        stores.datasets.create(a.id, "kitty", trigger_word=word)
    ds = stores.datasets.create(a.id, "kitty")
    with pytest.raises(UserInputError, match="such as"):
        stores.datasets.set_trigger_word(a.id, ds.id, word)
    assert stores.datasets.get(a.id, ds.id).trigger_word == ""


def test_a_public_model_of_a_is_not_applied_to_bs_prompt_containing_its_trigger_word(
    stores: Stores,
) -> None:
    kitty = model(stores, A, "kitty", "zqkitty7", public=True)
    planned = plan(stores, B, "a zqkitty7 on a sofa")
    assert lora_names(planned) == [], "A's LoraLoader must not be in B's graph"
    assert "loras" not in planned.settings
    # Its owner still gets it by the trigger word.
    assert lora_names(plan(stores, A, "a zqkitty7 on a sofa")) == [kitty.filename]


def test_a_public_model_applies_to_bs_prompt_when_b_names_it(stores: Stores) -> None:
    kitty = model(stores, A, "kitty", "zqkitty7", public=True)
    planned = plan(stores, B, "a cat on a sofa <lora:Kitty:0.5>")
    assert lora_names(planned) == [kitty.filename]
    assert planned.prompt == "a cat on a sofa"


def test_a_public_model_applies_to_bs_prompt_once_b_added_it_to_their_list(
    stores: Stores,
) -> None:
    kitty = model(stores, A, "kitty", "zqkitty7", public=True)
    b = stores.users.get(B)
    stores.models.add(b.id, "kitty")
    assert lora_names(plan(stores, B, "a zqkitty7 on a sofa")) == [kitty.filename]
    stores.models.remove(b.id, "kitty")
    assert lora_names(plan(stores, B, "a zqkitty7 on a sofa")) == []


def test_a_private_model_of_a_cannot_be_named_or_added_by_b(stores: Stores) -> None:
    secret = model(stores, A, "secret", "zqsecret", public=False)
    with pytest.raises(UserInputError, match="no model named 'secret'"):
        plan(stores, B, "a fox <lora:secret>")
    b = stores.users.get(B)
    for ref in ("secret", secret.id):
        with pytest.raises(NotFound, match="no public model"):
            stores.models.add(b.id, ref)


def test_a_model_whose_old_trigger_word_no_longer_passes_works_only_when_named(
    stores: Stores,
) -> None:
    legacy = model(stores, A, "moggy", "cat", public=True)  # stored before the rules changed
    assert lora_names(plan(stores, A, "a cat on a sofa")) == []
    assert lora_names(plan(stores, A, "a cat on a sofa <lora:moggy>")) == [legacy.filename]
    b = stores.users.get(B)
    stores.models.add(b.id, "moggy")
    assert lora_names(plan(stores, B, "a cat on a sofa")) == []


def test_a_prompt_naming_more_loras_than_allowed_is_refused_with_nothing_charged(
    stores: Stores,
) -> None:
    for n in range(4):
        model(stores, A, f"style{n}", f"zqstyle{n}", public=True)
    b = stores.users.get(B)
    before = stores.ledger.balance(b.id)
    prompt = "a fox " + " ".join(f"<lora:style{n}>" for n in range(4))
    with pytest.raises(UserInputError, match="uses 4 LoRAs; the limit is 3"):
        plan(stores, B, prompt)
    # The workflow's prepare activity refuses it too: a refused plan, priced 0.
    refused = JobActivities(stores, max_loras=3).prepare_make_image(
        PrepareInput(
            workflow_id="make-x", request=MakeImageRequest(user=B, prompt=prompt, overrides=SMALL)
        )
    )
    assert refused.refused and "the limit is 3" in refused.refused and refused.price == 0
    assert not refused.comfy
    assert stores.ledger.balance(b.id) == before
    assert [e.kind for e in stores.ledger.entries(b.id)] == ["grant"]
    # Exactly N is fine; a smaller configured N is honoured.
    assert len(lora_names(plan(stores, B, prompt.replace(" <lora:style3>", "")))) == 3
    with pytest.raises(UserInputError, match="uses 2 LoRAs; the limit is 1"):
        plan(stores, B, "a fox <lora:style0> <lora:style1>", max_loras=1)


# ---- item 5: the checkpoint is checked and priced by its family -----------------------------


def test_a_flux_checkpoint_under_the_sdxl_template_is_refused_not_sold_at_the_sdxl_price(
    stores: Stores,
) -> None:
    sdxl_price = plan(stores, B, "a fox").price
    assert sdxl_price == 15
    with pytest.raises(UserInputError) as err:
        plan(stores, B, "a fox", checkpoint=FLUX)
    assert SDXL in err.value.message and FLUX not in err.value.message.split("checkpoints:")[1]
    # Saved in the settings (before this check existed) it is refused the same way.
    b = stores.users.get(B)
    stores.users.coll.update_one({"_id": b.id}, {"$set": {"settings.checkpoint": FLUX}})
    with pytest.raises(UserInputError, match="cannot be used with template 'make'"):
        plan(stores, B, "a fox")


def test_an_unknown_checkpoint_is_refused_listing_only_the_templates_family(
    stores: Stores,
) -> None:
    with pytest.raises(UserInputError) as err:
        plan(stores, B, "a fox", checkpoint="../../models/private.ckpt")
    assert f"sdxl checkpoints: {SDXL}" in err.value.message
    assert FLUX not in err.value.message


def test_a_checkpoint_is_priced_by_its_own_family(stores: Stores) -> None:
    make = stores.templates.get("make").definition()
    stores.templates.load(Template.parse({**make, "name": "make-any", "family": "any"}))
    flux = plan(stores, B, "a fox", template="make-any", checkpoint=FLUX)
    sdxl = plan(stores, B, "a fox", template="make-any", checkpoint=SDXL)
    assert (sdxl.price, flux.price) == (15, 25)
    assert flux.comfy[0].graph["4"]["inputs"]["ckpt_name"] == FLUX
    assert plan(stores, B, "a fox", template="make-flux").price == 25
    # A template that takes no checkpoint ignores the setting, in the graph and in the price.
    fixed = copy.deepcopy(make)
    del fixed["inputs"]["checkpoint"]
    fixed["graph"]["4"]["_meta"]["title"] = "Load Checkpoint"
    stores.templates.load(Template.parse({**fixed, "name": "make-fixed"}))
    ignored = plan(stores, B, "a fox", template="make-fixed", checkpoint=FLUX)
    assert ignored.price == 15 and ignored.comfy[0].graph["4"]["inputs"]["ckpt_name"] == SDXL


def test_a_checkpoint_no_gpu_server_has_is_refused_before_any_charge(stores: Stores) -> None:
    """Known to the config, but no server reported it in its /object_info: refused at prepare
    (the job would otherwise be charged, fail on ComfyUI and be refunded)."""
    spare = "sdxl-spare.safetensors"
    request = MakeImageRequest(user=B, prompt="a fox", overrides={**SMALL, "checkpoint": spare})
    planner = MakePlanner(stores, checkpoints={spare: "sdxl"})
    inp = PrepareInput(workflow_id="", request=request)
    assert planner.plan_make_image(inp).price == 15, "no server reported yet: nothing to refuse"
    stores.inventory.record("http://gpu-1:8188", [SDXL, FLUX])
    with pytest.raises(UserInputError, match="not installed on any GPU server"):
        planner.plan_make_image(inp)
    stores.inventory.record("http://gpu-2:8188", [spare])
    assert planner.plan_make_image(inp).price == 15, "a second server has it"
    long_ago = datetime.now(UTC) - timedelta(days=1)
    stores.inventory.record("http://gpu-2:8188", [spare], now=long_ago)
    with pytest.raises(UserInputError, match="not installed on any GPU server"):
        planner.plan_make_image(inp)  # the server that had it has not been seen for a day


# ---- item 10: the negative prompt is cleaned like the prompt ---------------------------------


def test_control_characters_never_reach_the_negative_prompt(stores: Stores) -> None:
    dirty = "blurry\x1b[2J\x00 ugly\u202e\u0007"
    planned = plan(stores, B, "a fox", negative=dirty)
    text = planned.comfy[0].graph["7"]["inputs"]["text"]
    assert text == "blurry [2J  ugly"
    # A value saved before the setting was cleaned is cleaned when it is used.
    b = stores.users.get(B)
    stores.users.coll.update_one({"_id": b.id}, {"$set": {"settings.negative": dirty}})
    assert plan(stores, B, "a fox").comfy[0].graph["7"]["inputs"]["text"] == "blurry [2J  ugly"
    assert stores.settings.update(b.id, {"negative": dirty}).negative == "blurry [2J  ugly"


# ---- the real stack: CLI and jobs client -----------------------------------------------------


def cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli.main", *argv],
        check=False,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.stack
async def test_b_adds_and_removes_a_public_model_and_stacking_loras_charges_nothing(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    a = f"cli:adv-a-{uuid.uuid4().hex[:8]}"
    b = f"cli:adv-b-{uuid.uuid4().hex[:8]}"
    for who in (a, b):
        await asyncio.to_thread(jobs.stores.users.get_or_create, who, 500)
    name = f"ink{uuid.uuid4().hex[:6]}"
    made = [
        await asyncio.to_thread(model, jobs.stores, a, f"{name}{n}", f"zq{name}{n}", public=True)
        for n in range(4)
    ]

    out = await asyncio.to_thread(cli, dev_stack, "models", "add", f"{name}0", "--user", b)
    assert out.returncode == 0, out.stderr
    assert "now applies to your prompts" in out.stdout
    listed = await asyncio.to_thread(cli, dev_stack, "models", "list", "--user", b)
    assert f"{name}0" in listed.stdout and "added: trigger word on" in listed.stdout
    assert [m.id for m in await jobs.added_models(b)] == [made[0].id]
    out = await asyncio.to_thread(cli, dev_stack, "models", "remove", f"{name}0", "--user", b)
    assert out.returncode == 0 and await jobs.added_models(b) == []
    out = await asyncio.to_thread(cli, dev_stack, "models", "remove", f"{name}0", "--user", b)
    assert out.returncode != 0 and "in your list" in out.stderr + out.stdout

    # Four LoRAs with a limit of 3: refused by the jobs client; no charge, no slot, no job.
    before = await asyncio.to_thread(jobs.stores.ledger.balance, b)
    prompt = "a fox " + " ".join(f"<lora:{name}{n}>" for n in range(4))
    with pytest.raises(UserInputError, match="the limit is 3"):
        await jobs.start_make(MakeImageRequest(user=b, prompt=prompt, overrides=SMALL))
    assert await asyncio.to_thread(jobs.stores.ledger.balance, b) == before
    assert await jobs.active(b) == []

    # `/set checkpoint` refuses a Flux file for the SDXL template, naming SDXL files only.
    with pytest.raises(SettingsError) as err:
        await jobs.update_settings(b, {"checkpoint": FLUX})
    assert SDXL in err.value.message and FLUX not in err.value.message.split("(")[1]
    saved = await jobs.update_settings(b, {"template": "make-flux", "checkpoint": FLUX})
    assert saved.checkpoint == FLUX
