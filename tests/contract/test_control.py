"""Stopping, re-attaching and surviving a lost socket or a restarted server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from comfy.client import ComfyClient
from comfy.errors import ComfyInterrupted, PromptLost
from comfy.models import Progress
from tests.contract.conftest import Faults, txt2img


async def test_interrupting_a_running_prompt_raises_interrupted(
    comfy: ComfyClient, ckpt: str
) -> None:
    prompt_id = str(uuid.uuid4())
    interrupted = False

    async def interrupt_at_first_step(progress: Progress) -> None:
        nonlocal interrupted
        if progress.value is not None and not interrupted:
            interrupted = True
            await comfy.interrupt(prompt_id)

    with pytest.raises(ComfyInterrupted) as caught:
        await comfy.run(
            txt2img(ckpt, steps=400),
            prompt_id=prompt_id,
            on_progress=interrupt_at_first_step,
            timeout=60,
        )
    assert caught.value.prompt_id == prompt_id
    assert not caught.value.retryable
    entry = await comfy.history(prompt_id)
    assert entry is not None
    assert entry["status"]["status_str"] == "error"


async def test_cancelling_a_queued_prompt_dequeues_it_without_history(
    comfy: ComfyClient, ckpt: str
) -> None:
    blocker = await comfy.submit(txt2img(ckpt, steps=400))
    try:
        victim = await comfy.submit(txt2img(ckpt))
        assert await comfy.queue_position(victim.prompt_id) == 1

        assert await comfy.cancel(victim.prompt_id) is True

        assert await comfy.queue_position(victim.prompt_id) is None
        assert await comfy.history(victim.prompt_id) is None
        with pytest.raises(ComfyInterrupted):
            await comfy.wait(victim.prompt_id, timeout=10)
        assert await comfy.cancel(victim.prompt_id) is False
    finally:
        assert await comfy.cancel(blocker.prompt_id) is True
    with pytest.raises(ComfyInterrupted):
        await comfy.wait(blocker.prompt_id, timeout=30)
    assert await comfy.cancel(blocker.prompt_id) is False


async def test_wait_reattaches_to_a_running_prompt_from_another_client(
    comfy: ComfyClient, comfy_url: str, ckpt: str
) -> None:
    submitted = await comfy.submit(txt2img(ckpt, steps=40))
    # A second client, as a retried activity in a fresh worker process would have.
    async with ComfyClient(comfy_url, timeout=10.0, poll_interval=0.2) as other:
        seen: list[Progress] = []
        result = await other.wait(submitted.prompt_id, on_progress=seen.append, timeout=60)
    assert result.prompt_id == submitted.prompt_id
    assert [f.node_id for f in result.outputs] == ["9"]
    assert seen[-1].stage == "done"
    assert any(p.stage == "running" for p in seen)
    assert await comfy.queue_position(submitted.prompt_id) is None


async def test_waiting_for_a_prompt_the_server_never_saw_raises_prompt_lost(
    comfy: ComfyClient,
) -> None:
    with pytest.raises(PromptLost) as caught:
        await comfy.wait(str(uuid.uuid4()), timeout=10)
    assert caught.value.retryable


async def test_a_run_survives_its_websocket_being_dropped(
    comfy: ComfyClient, ckpt: str, faults: Faults
) -> None:
    dropped = False

    async def drop_at_first_step(progress: Progress) -> None:
        nonlocal dropped
        if progress.value is not None and not dropped:
            dropped = True
            await faults.set(drop_ws=True, refuse_ws=True)

    result = await comfy.run(
        txt2img(ckpt, steps=20), on_progress=drop_at_first_step, timeout=60
    )
    assert dropped
    assert result.status == "success"
    assert [f.node_id for f in result.outputs] == ["9"]


async def test_a_restart_that_loses_the_queue_raises_prompt_lost(
    comfy: ComfyClient, ckpt: str, faults: Faults
) -> None:
    running_id = str(uuid.uuid4())
    queued = None
    restarted = False

    async def restart_at_first_step(progress: Progress) -> None:
        nonlocal queued, restarted
        if progress.value is not None and not restarted:
            restarted = True
            queued = await comfy.submit(txt2img(ckpt))
            await faults.set(restart=True)

    with pytest.raises(PromptLost) as caught:
        await comfy.run(
            txt2img(ckpt, steps=400),
            prompt_id=running_id,
            on_progress=restart_at_first_step,
            timeout=60,
        )
    assert caught.value.prompt_id == running_id
    assert caught.value.retryable
    assert queued is not None
    with pytest.raises(PromptLost):
        await comfy.wait(queued.prompt_id, timeout=10)


async def test_the_deadline_of_a_run_is_a_retryable_timeout_and_the_prompt_can_be_reattached(
    comfy: ComfyClient, ckpt: str
) -> None:
    from comfy.errors import ComfyTimeout

    prompt_id = str(uuid.uuid4())
    with pytest.raises(ComfyTimeout) as caught:
        await comfy.run(txt2img(ckpt, steps=100), prompt_id=prompt_id, timeout=0.5)
    assert caught.value.retryable
    assert caught.value.prompt_id == prompt_id
    result = await comfy.wait(prompt_id, timeout=60)
    assert result.prompt_id == prompt_id
    await asyncio.sleep(0)
