"""`dataset add` under the operator's `block` policy: each prepared dataset image goes through
the content filter, and a flagged one refuses the whole add (issue 19). Activities are mocked at
the boundary; the classifier's answer comes through a fake `check_outputs`."""

from __future__ import annotations

import uuid

from temporalio import activity
from temporalio.worker import Worker

from domain.safety import Action, CheckOutputsInput, CheckOutputsResult, Verdict
from domain.training import (
    AddImagesInput,
    DatasetImagesRequest,
    DatasetImagesResult,
    PrepareImageInput,
)
from workflows.train_lora import DatasetImagesWorkflow


class Fakes:
    def __init__(self, flagged: set[str]) -> None:
        self.flagged = flagged
        self.checked: list[CheckOutputsInput] = []
        self.added: list[AddImagesInput] = []

    @activity.defn(name="prepare_dataset_image")
    async def prepare_dataset_image(self, inp: PrepareImageInput) -> str:
        return f"prepared-{inp.index}"

    @activity.defn(name="add_dataset_images")
    async def add_dataset_images(self, inp: AddImagesInput) -> DatasetImagesResult:
        self.added.append(inp)
        return DatasetImagesResult(dataset_id=inp.dataset, added=len(inp.images))

    @activity.defn(name="check_outputs")
    async def check_outputs(self, inp: CheckOutputsInput) -> CheckOutputsResult:
        self.checked.append(inp)
        return CheckOutputsResult(
            verdicts=[
                Verdict(
                    blob_id=o.blob_id,
                    score=0.9 if o.blob_id in self.flagged else 0.0,
                    action=Action.BLOCK if o.blob_id in self.flagged else Action.ALLOW,
                )
                for o in inp.outputs
            ]
        )


async def run(env, fakes: Fakes, safety: str) -> DatasetImagesResult:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    request = DatasetImagesRequest(
        user="telegram:1",
        dataset="d1",
        originals=["o0", "o1", "o2"],
        user_id="u1",
        media_queue=tq,
        safety=safety,
        safety_queue=tq,
    )
    async with Worker(
        env.client,
        task_queue=tq,
        workflows=[DatasetImagesWorkflow],
        activities=[fakes.prepare_dataset_image, fakes.add_dataset_images, fakes.check_outputs],
    ):
        result: DatasetImagesResult = await env.client.execute_workflow(
            DatasetImagesWorkflow.run,
            request,
            id=f"dataset-add-{uuid.uuid4().hex[:8]}",
            task_queue=tq,
        )
    return result


async def test_a_flagged_dataset_image_refuses_the_whole_add(temporal_ts_env) -> None:
    fakes = Fakes(flagged={"prepared-1"})
    result = await run(temporal_ts_env, fakes, "block")
    assert result.refused and "image 2 was refused by the content filter" in result.refused
    assert fakes.added == []
    assert [o.blob_id for o in fakes.checked[0].outputs] == [
        "prepared-0",
        "prepared-1",
        "prepared-2",
    ]


async def test_clean_dataset_images_are_added_after_the_check(temporal_ts_env) -> None:
    fakes = Fakes(flagged=set())
    result = await run(temporal_ts_env, fakes, "block")
    assert result.refused is None and result.added == 3 and len(fakes.checked) == 1


async def test_without_the_block_policy_dataset_images_are_not_checked(temporal_ts_env) -> None:
    fakes = Fakes(flagged={"prepared-1"})
    result = await run(temporal_ts_env, fakes, "off")
    assert result.added == 3 and fakes.checked == []
