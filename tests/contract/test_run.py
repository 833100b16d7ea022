"""A prompt runs end to end: progress in order, outputs downloadable, uploads usable."""

from __future__ import annotations

import io
import uuid

from PIL import Image

from comfy.client import ComfyClient
from comfy.models import Progress
from tests.contract.conftest import Pace, start_blocker, txt2img
from tests.fixtures.comfy import ComfyServer

STAGE_RANK = {"queued": 0, "running": 1, "done": 2}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def test_txt2img_reports_progress_in_order_and_returns_pngs_of_the_asked_size(
    comfy: ComfyClient, ckpt: str, pace: Pace
) -> None:
    seen: list[Progress] = []
    result = await comfy.run(
        txt2img(ckpt, width=64, height=48, batch=2, steps=4),
        on_progress=seen.append,
        timeout=pace.timeout(),
    )

    assert result.status == "success"
    assert [f.node_id for f in result.outputs] == ["9", "9"]
    for file in result.outputs:
        assert file.type == "output"
        assert png_size(await comfy.view(file)) == (64, 48)
    assert result.execution_seconds is not None
    assert result.execution_seconds >= 0
    assert result.history["status"]["status_str"] == "success"

    ranks = [STAGE_RANK[p.stage] for p in seen]
    assert ranks == sorted(ranks), f"stages went backwards: {[p.stage for p in seen]}"
    assert seen[-1].stage == "done"
    assert seen[-1].percent == 100.0
    assert all(p.prompt_id == result.prompt_id for p in seen)
    sampler = [p for p in seen if p.node == "3" and p.value is not None]
    assert [p.value for p in sampler] == [1, 2, 3, 4]
    assert {p.max for p in sampler} == {4}
    assert sampler[-1].percent == 100.0


async def test_a_queued_prompt_reports_its_place_in_the_queue(
    comfy: ComfyClient, comfy_faults_reset: ComfyServer, ckpt: str, pace: Pace
) -> None:
    blocker = await start_blocker(comfy, comfy_faults_reset, ckpt, pace)
    try:
        seen: list[Progress] = []

        async def stop_blocker_once_reported(progress: Progress) -> None:
            seen.append(progress)
            if progress.stage == "queued":
                await comfy.cancel(blocker)

        result = await comfy.run(
            txt2img(ckpt), on_progress=stop_blocker_once_reported, timeout=pace.timeout()
        )
        assert result.status == "success"
        assert seen[0].stage == "queued"
        assert seen[0].queue_position == 1
        assert seen[-1].stage == "done"
    finally:
        await comfy.cancel(blocker)


async def test_events_sent_before_the_post_answer_still_reach_the_progress_callback(
    slow_accept_url: str, ckpt: str, pace: Pace
) -> None:
    # The proxy holds back the POST /prompt answer until the run is over, so every event of the
    # run reaches the socket before the client knows its prompt was accepted.
    seen: list[Progress] = []
    async with ComfyClient(slow_accept_url, timeout=10.0) as comfy:
        result = await comfy.run(
            txt2img(ckpt, steps=3), on_progress=seen.append, timeout=pace.timeout()
        )
    assert result.status == "success"
    assert [p.value for p in seen if p.node == "3" and p.value is not None] == [1, 2, 3]
    assert seen[-1].stage == "done"


async def test_an_uploaded_image_feeds_a_load_image_graph(comfy: ComfyClient, pace: Pace) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 24), (10, 200, 30)).save(buffer, format="PNG")
    filename = f"contract-{uuid.uuid4().hex[:8]}.png"

    name = await comfy.upload_image(buffer.getvalue(), filename)

    assert name == filename
    assert name in await comfy.combo_options("LoadImage", "image")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "contract/upload"},
        },
    }
    result = await comfy.run(graph, timeout=pace.timeout())
    assert len(result.outputs) == 1
    assert png_size(await comfy.view(result.outputs[0])) == (40, 24)


async def test_uploading_into_a_subfolder_returns_the_path_load_image_needs(
    comfy: ComfyClient,
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    name = await comfy.upload_image(
        buffer.getvalue(), "a.png", subfolder="contract", overwrite=True
    )
    assert name == "contract/a.png"


async def test_a_finished_prompt_can_be_awaited_again_without_running_twice(
    comfy: ComfyClient, ckpt: str, pace: Pace
) -> None:
    first = await comfy.run(txt2img(ckpt), timeout=pace.timeout())
    again = await comfy.wait(first.prompt_id, timeout=10)
    assert again.outputs == first.outputs
    assert again.history["prompt"][0] == first.history["prompt"][0]


async def test_text_outputs_of_a_run_are_returned_by_node(comfy: ComfyClient, pace: Pace) -> None:
    graph = {"1": {"class_type": "PreviewAny", "inputs": {"source": "a red cube"}}}
    result = await comfy.run(graph, timeout=pace.timeout())
    assert result.texts == {"1": ["a red cube"]}
    assert result.outputs == []
