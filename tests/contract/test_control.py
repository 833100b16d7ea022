"""Stopping, re-attaching and surviving a lost socket or a restarted server."""

from __future__ import annotations

import uuid

import pytest

from comfy.client import ComfyClient
from comfy.errors import ComfyInterrupted, ComfyTimeout, PromptLost
from comfy.models import Progress
from tests.contract.conftest import Pace, start_blocker, txt2img
from tests.fixtures.comfy import ComfyServer


async def test_interrupting_a_running_prompt_raises_interrupted(
    comfy: ComfyClient, comfy_faults_reset: ComfyServer, ckpt: str, pace: Pace
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
            txt2img(ckpt, steps=pace.steps_for(60)),
            prompt_id=prompt_id,
            on_progress=interrupt_at_first_step,
            timeout=pace.timeout(),
        )
    assert caught.value.prompt_id == prompt_id
    assert caught.value.node_id == "3"
    assert not caught.value.retryable
    entry = await comfy.history(prompt_id)
    assert entry is not None
    assert entry["status"]["status_str"] == "error"


async def test_cancelling_a_queued_prompt_dequeues_it_without_history(
    comfy: ComfyClient, comfy_faults_reset: ComfyServer, ckpt: str, pace: Pace
) -> None:
    blocker = await start_blocker(comfy, comfy_faults_reset, ckpt, pace)
    try:
        victim = await comfy.submit(txt2img(ckpt))
        assert await comfy.queue_position(blocker) == 0
        assert await comfy.queue_position(victim.prompt_id) == 1

        assert await comfy.cancel(victim.prompt_id) is True

        assert await comfy.queue_position(victim.prompt_id) is None
        assert await comfy.history(victim.prompt_id) is None
        with pytest.raises(ComfyInterrupted):  # this client knows it cancelled it
            await comfy.wait(victim.prompt_id, timeout=10)
        assert await comfy.cancel(victim.prompt_id) is False
    finally:
        cancelled_blocker = await comfy.cancel(blocker)
    assert cancelled_blocker is True  # running: interrupted
    with pytest.raises(ComfyInterrupted):
        await comfy.wait(blocker, timeout=pace.timeout())
    assert await comfy.cancel(blocker) is False


async def test_wait_reattaches_to_a_running_prompt_from_another_client(
    comfy: ComfyClient, comfy_faults_reset: ComfyServer, comfy_url: str, ckpt: str, pace: Pace
) -> None:
    steps = pace.steps_for(1.0)
    submitted = await comfy.submit(txt2img(ckpt, steps=steps))
    # A second client, as a retried activity in a fresh worker process would have.
    async with ComfyClient(comfy_url, timeout=10.0, poll_interval=0.2) as other:
        seen: list[Progress] = []
        result = await other.wait(
            submitted.prompt_id, on_progress=seen.append, timeout=pace.timeout(steps)
        )
    assert result.prompt_id == submitted.prompt_id
    assert [f.node_id for f in result.outputs] == ["9"]
    assert any(p.stage == "running" and p.node == "3" and p.value for p in seen)
    assert seen[-1].stage == "done"
    assert await comfy.queue_position(submitted.prompt_id) is None


async def test_waiting_for_a_prompt_the_server_never_saw_raises_prompt_lost(
    comfy: ComfyClient,
) -> None:
    with pytest.raises(PromptLost) as caught:
        await comfy.wait(str(uuid.uuid4()), timeout=10)
    assert caught.value.retryable


async def test_a_run_survives_its_websocket_being_dropped(
    comfy: ComfyClient, ckpt: str, faults: ComfyServer, pace: Pace
) -> None:
    faults.set_faults(ws_drop={"next": 1})
    seen: list[Progress] = []
    result = await comfy.run(
        txt2img(ckpt, steps=20), on_progress=seen.append, timeout=pace.timeout(20)
    )
    assert faults.faults()["injected"] == {"ws_drop": 1}
    assert result.status == "success"
    assert [f.node_id for f in result.outputs] == ["9"]
    assert seen[-1].stage == "done"


async def test_a_restart_that_loses_the_running_prompt_raises_prompt_lost(
    comfy: ComfyClient, ckpt: str, faults: ComfyServer, pace: Pace
) -> None:
    faults.set_faults(restart={"next": 1})
    prompt_id = str(uuid.uuid4())
    with pytest.raises(PromptLost) as caught:
        await comfy.run(txt2img(ckpt), prompt_id=prompt_id, timeout=pace.timeout())
    assert caught.value.prompt_id == prompt_id
    assert caught.value.retryable
    # Resubmitting under the same id works: the server has forgotten it.
    assert (
        await comfy.run(txt2img(ckpt), prompt_id=prompt_id, timeout=pace.timeout())
    ).status == "success"


async def test_a_restart_that_loses_the_queue_makes_wait_raise_prompt_lost(
    comfy: ComfyClient, ckpt: str, faults: ComfyServer
) -> None:
    blocker = await start_blocker(comfy, faults, ckpt)
    queued = await comfy.submit(txt2img(ckpt))
    faults.restart()
    for prompt_id in (blocker, queued.prompt_id):
        with pytest.raises(PromptLost):
            await comfy.wait(prompt_id, timeout=10)


async def test_the_deadline_of_a_run_is_a_retryable_timeout_and_the_prompt_can_be_reattached(
    comfy: ComfyClient, comfy_faults_reset: ComfyServer, ckpt: str, pace: Pace
) -> None:
    prompt_id = str(uuid.uuid4())
    steps = pace.steps_for(3.0)  # still running when the 0.3 s deadline passes
    with pytest.raises(ComfyTimeout) as caught:
        await comfy.run(txt2img(ckpt, steps=steps), prompt_id=prompt_id, timeout=0.3)
    assert caught.value.retryable
    assert caught.value.prompt_id == prompt_id
    result = await comfy.wait(prompt_id, timeout=pace.timeout(steps))
    assert result.prompt_id == prompt_id
