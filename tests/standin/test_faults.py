"""Fault injection: each failure mode looks to a client like the real failure would."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.fixtures.comfy import ComfyServer
from tests.standin.util import Session, txt2img, unique


@pytest.fixture
def standin(comfy_faults_reset: ComfyServer) -> ComfyServer:
    comfy_faults_reset.require_faults()
    return comfy_faults_reset


async def test_a_500_on_submit_queues_nothing(standin: ComfyServer) -> None:
    standin.set_faults(http_500={"next": 1})
    async with Session(standin) as s:
        graph = txt2img(text=unique(), prefix=unique())
        failed = await s.http.post("/prompt", json={"prompt": graph, "client_id": s.client_id})
        assert failed.status_code == 500 and failed.headers["content-type"].startswith("text/")
        assert (await s.http.get("/queue")).json()["queue_pending"] == []
        run = await s.run(graph)  # the next one goes through
    assert run.of("execution_success")
    assert standin.faults()["injected"] == {"http_500": 1}


async def test_an_execution_error_is_reported_and_recorded(standin: ComfyServer) -> None:
    standin.set_faults(execution_error={"next": 1})
    async with Session(standin) as s:
        graph = txt2img(text=unique(), prefix=unique())
        run = await s.run(graph)
        entry = await s.history(run.prompt_id)
    (err,) = run.of("execution_error")
    assert err["exception_message"].endswith("\n") and err["exception_type"] == "RuntimeError"
    assert err["executed"] == [] and sorted(err["current_outputs"]) == sorted(graph)
    assert isinstance(err["traceback"], list) and "timestamp" in err
    assert "execution_success" not in run.types()
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1] == ["execution_error", err]
    # The failing node stays "running": no finished state follows.
    last = run.of("progress_state")[-1]["nodes"]
    assert last[err["node_id"]]["state"] == "running"


async def test_a_dropped_websocket_does_not_stop_the_run(standin: ComfyServer) -> None:
    standin.set_faults(ws_drop={"next": 1})
    async with Session(standin) as s:
        run = await s.submit(txt2img(text=unique(), prefix=unique()))
        with pytest.raises(ConnectionClosed):
            await s.follow(run, timeout=10)
        for _ in range(200):
            entry = await s.history(run.prompt_id)
            if entry:
                break
            await asyncio.sleep(0.02)
    assert entry["status"]["status_str"] == "success"


async def test_a_hung_prompt_finishes_only_when_interrupted(standin: ComfyServer) -> None:
    standin.set_faults(hang={"next": 1})
    async with Session(standin) as s:
        run = await s.submit(txt2img(text=unique(), prefix=unique()))
        with pytest.raises(TimeoutError):
            await s.follow(run, timeout=0.5)
        assert await s.history(run.prompt_id) == {}
        await s.http.post("/interrupt", json={"prompt_id": run.prompt_id})
        await s.follow(run)
    assert run.of("execution_interrupted")


async def test_a_restart_loses_queue_history_and_sockets(standin: ComfyServer) -> None:
    async with Session(standin) as s:
        done = await s.run(txt2img(text=unique(), prefix=unique()))
        assert await s.history(done.prompt_id)
        standin.set_faults(restart={"next": 1})
        lost = await s.submit(txt2img(text=unique(), prefix=unique()))
        with pytest.raises(ConnectionClosed):
            await s.follow(lost, timeout=10)
        assert await s.history(lost.prompt_id) == {}
        assert await s.history(done.prompt_id) == {}
        queue = (await s.http.get("/queue")).json()
        assert queue == {"queue_running": [], "queue_pending": []}
        # The counter starts again, as in a fresh process.
        r = await s.http.post("/prompt", json={"prompt": txt2img(text=unique(), prefix=unique())})
        assert r.json()["number"] == 0


async def test_seeded_fault_rates_repeat_exactly(standin: ComfyServer) -> None:
    async def pattern() -> list[int]:
        standin.reset_faults()
        standin.set_faults(http_500={"rate": 0.5}, seed=1234)
        codes = []
        async with httpx.AsyncClient(base_url=standin.url) as http:
            for _ in range(12):
                graph = txt2img(text=unique(), prefix=unique())
                r = await http.post("/prompt", json={"prompt": graph})
                codes.append(r.status_code)
        standin.reset_faults()
        return codes

    first, second = await pattern(), await pattern()
    assert first == second and 200 in first and 500 in first


async def test_a_fixed_render_time_paces_each_prompt(standin: ComfyServer) -> None:
    standin.set_faults(render_time=0.6)
    async with Session(standin) as s:
        loop = asyncio.get_running_loop()
        start = loop.time()
        run = await s.run(txt2img(steps=4, text=unique(), prefix=unique()))
        elapsed = loop.time() - start
    assert run.of("execution_success") and 0.6 <= elapsed < 3.0
