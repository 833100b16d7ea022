"""The stand-in speaks ComfyUI v0.3.64's protocol: events, errors, queue, caching, files."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import httpx
from PIL import Image

from tests.fixtures.comfy import ComfyServer
from tests.standin.util import Session, txt2img, unique


async def test_one_run_sends_the_events_in_comfyuis_order(comfy_faults_reset: ComfyServer) -> None:
    async with Session(comfy_faults_reset) as s:
        # /free drops the cache, so no node of the previous test's graph is reused.
        freed = await s.http.post("/free", json={"free_memory": True})
        assert freed.status_code == 200 and freed.content == b""
        run = await s.run(txt2img(steps=3, text=unique(), prefix=unique()))
        entry = await s.history(run.prompt_id)
    types = run.types()
    assert run.of("execution_cached")[0]["nodes"] == []
    assert types[:4] == ["status", "status", "execution_start", "execution_cached"]
    assert types[-3:] == ["execution_success", "status", "executing"]
    per_node = [d["node"] for t, d in run.events if t == "executing" and d["node"] is not None]
    assert sorted(per_node) == ["3", "4", "5", "6", "7", "8", "9"]
    assert per_node.index("4") < per_node.index("6") < per_node.index("3") < per_node.index("8")
    assert per_node[-1] == "9"
    # Sampler: per step a progress_state then a progress, values 1..steps.
    progress = run.of("progress")
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "3"), (2, 3, "3"),
                                                                      (3, 3, "3")]  # fmt: skip
    i = types.index("progress")
    assert types[i - 1] == "progress_state"
    # Each node: running progress_state, executing, ..., finished progress_state.
    j = next(k for k, (t, d) in enumerate(run.events) if t == "executing" and d["node"] == "9")
    assert run.events[j - 1][0] == "progress_state"
    assert run.events[j - 1][1]["nodes"]["9"]["state"] == "running"
    assert run.events[j + 1][0] == "executed"
    assert run.events[j + 2][1]["nodes"]["9"]["state"] == "finished"
    assert set(run.events[j + 2][1]["nodes"]) == {"3", "4", "5", "6", "7", "8", "9"}
    assert run.of("status")[-1]["status"]["exec_info"]["queue_remaining"] == 0
    # History was written before the final executing null; it matches the executed event.
    assert entry["outputs"]["9"] == run.of("executed")[0]["output"]
    assert entry["prompt"][1] == run.prompt_id and entry["prompt"][4] == ["9"]
    assert entry["prompt"][3] == {"client_id": s.client_id}
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start", "execution_cached", "execution_success"]  # fmt: skip


async def test_an_identical_resubmission_is_served_from_the_cache(
    comfy_faults_reset: ComfyServer,
) -> None:
    graph = txt2img(text=unique(), prefix=unique())
    async with Session(comfy_faults_reset) as s:
        first = await s.run(graph)
        second = await s.run(graph)
        entry = await s.history(second.prompt_id)
    assert second.of("execution_cached")[0]["nodes"] == list(graph)
    assert "executing" not in [t for t, d in second.events if d.get("node") is not None]
    assert second.of("progress") == []
    (cached,) = second.of("executed")
    assert cached["output"] == first.of("executed")[0]["output"]  # same file, none written
    finished = second.of("progress_state")[-1]["nodes"]
    assert finished == {"9": finished["9"]} and (finished["9"]["value"], finished["9"]["max"]) == (
        1, 1)  # fmt: skip
    assert entry["outputs"]["9"] == cached["output"]


async def _post(server: ComfyServer, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.post("/prompt", json=body)


async def test_bad_prompts_get_comfyuis_400_shapes(comfy_faults_reset: ComfyServer) -> None:
    server = comfy_faults_reset
    r = await _post(server, {"client_id": "x"})
    assert r.status_code == 400
    assert r.json() == {"error": {"type": "no_prompt", "message": "No prompt provided",
                                  "details": "No prompt provided", "extra_info": {}},
                        "node_errors": {}}  # fmt: skip
    graph = txt2img()
    graph["2"] = {"class_type": "NoSuchNode", "inputs": {}}
    body = (await _post(server, {"prompt": graph})).json()
    assert body["error"] == {"type": "invalid_prompt",
                             "message": "Cannot execute because node NoSuchNode does not exist.",
                             "details": "Node ID '#2'", "extra_info": {}}  # fmt: skip
    graph = txt2img()
    del graph["9"]
    body = (await _post(server, {"prompt": graph})).json()
    assert body["error"]["type"] == "prompt_no_outputs"


async def test_per_node_validation_errors_name_the_input(comfy_faults_reset: ComfyServer) -> None:
    server = comfy_faults_reset
    graph = txt2img()
    graph["5"]["inputs"]["width"] = "abc"
    graph["5"]["inputs"]["height"] = 0
    del graph["5"]["inputs"]["batch_size"]
    graph["3"]["inputs"]["sampler_name"] = "nope"
    graph["3"]["inputs"]["steps"] = 20000
    graph["3"]["inputs"]["model"] = ["4", 1]  # CLIP into MODEL
    r = await _post(server, {"prompt": graph})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["details"] == ""  # the output node itself is fine
    errors = {e["type"]: e for n in body["node_errors"].values() for e in n["errors"]}
    assert body["node_errors"]["5"]["class_type"] == "EmptyLatentImage"
    assert body["node_errors"]["5"]["dependent_outputs"] == ["9"]
    assert errors["invalid_input_type"]["details"] == (
        "width, abc, invalid literal for int() with base 10: 'abc'")  # fmt: skip
    assert errors["value_smaller_than_min"]["message"] == "Value 0 smaller than min of 16"
    assert errors["required_input_missing"]["extra_info"] == {"input_name": "batch_size"}
    assert errors["value_bigger_than_max"]["message"] == "Value 20000 bigger than max of 10000"
    assert errors["value_not_in_list"]["details"].startswith("sampler_name: 'nope' not in")
    assert errors["return_type_mismatch"]["details"] == (
        "model, received_type(CLIP) mismatch input_type(MODEL)")  # fmt: skip
    # A dangling link is reported on the node holding it, described by the link into it.
    graph = txt2img()
    graph["8"]["inputs"]["samples"] = ["99", 0]
    body = (await _post(server, {"prompt": graph})).json()
    (err,) = body["node_errors"]["8"]["errors"]
    assert err["type"] == "exception_during_inner_validation" and err["details"] == "'99'"
    assert err["extra_info"]["input_name"] == "images"
    assert err["extra_info"]["linked_node"] == ["8", 0]
    assert err["extra_info"]["exception_type"] == "KeyError"


async def test_invalid_json_is_a_plain_text_500_that_uses_no_number(
    comfy_faults_reset: ComfyServer,
) -> None:
    async with httpx.AsyncClient(base_url=comfy_faults_reset.url) as http:
        assert (await http.post("/prompt", json={})).status_code == 400  # takes a number too
        r = await http.post("/prompt", content=b"{not json")
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("text/plain")
        assert "Server got itself in trouble" in r.text
        graph = txt2img(text=unique(), prefix=unique())
        one = (await http.post("/prompt", json={"prompt": graph})).json()["number"]
        r = await http.post("/prompt", content=b"[1,")
        two = (await http.post("/api/prompt", json={"prompt": graph})).json()["number"]
        front = (await http.post("/prompt", json={"prompt": graph, "front": True})).json()
        explicit = (await http.post("/prompt", json={"prompt": graph, "number": 5})).json()
    assert two == one + 1
    assert front["number"] == -(two + 1)
    assert explicit["number"] == 5.0 and isinstance(explicit["number"], float)


async def test_interrupt_stops_a_sampler_at_its_next_step(comfy_faults_reset: ComfyServer) -> None:
    server = comfy_faults_reset
    server.set_faults(step_delay=0.05)
    async with Session(server) as s:
        run = await s.submit(txt2img(steps=200, text=unique(), prefix=unique()))
        await asyncio.sleep(0.4)
        r = await s.http.post("/interrupt")
        assert r.status_code == 200 and r.content == b""
        await s.follow(run)
        entry = await s.history(run.prompt_id)
    (stop,) = run.of("execution_interrupted")
    assert stop["node_id"] == "3" and stop["node_type"] == "KSampler"
    # The new prompt text ran (6); nodes shared with earlier graphs may have come from the cache.
    assert "6" in stop["executed"] and "3" not in stop["executed"]
    assert len(run.of("progress")) < 200
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_a_pending_prompt_can_be_deleted_from_the_queue(
    comfy_faults_reset: ComfyServer,
) -> None:
    server = comfy_faults_reset
    server.set_faults(step_delay=0.05)
    async with Session(server) as s:
        running = await s.submit(txt2img(steps=40, text=unique(), prefix=unique()))
        pending = await s.submit(txt2img(steps=2, text=unique(), prefix=unique()))
        queue = (await s.http.get("/queue")).json()
        assert [i[1] for i in queue["queue_pending"]] == [pending.prompt_id]
        assert [i[1] for i in queue["queue_running"]] == [running.prompt_id]
        r = await s.http.post("/queue", json={"delete": [pending.prompt_id]})
        assert r.status_code == 200 and r.content == b""
        assert (await s.http.get("/queue")).json()["queue_pending"] == []
        await s.http.post("/interrupt", json={"prompt_id": running.prompt_id})
        await s.follow(running)
        assert await s.history(pending.prompt_id) == {}
        assert (await s.history(running.prompt_id))["status"]["status_str"] == "error"


async def test_view_and_upload_follow_comfyuis_file_rules(comfy_faults_reset: ComfyServer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    other = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(other, format="PNG")
    name = unique("up") + ".png"
    async with httpx.AsyncClient(base_url=comfy_faults_reset.url) as http:

        async def upload(data: bytes) -> dict[str, Any]:
            r = await http.post("/api/upload/image", files={"image": (name, data, "image/png")})
            assert r.status_code == 200
            result: dict[str, Any] = r.json()
            return result

        first = await upload(buf.getvalue())
        same = await upload(buf.getvalue())
        clash = await upload(other.getvalue())
        assert first == {"name": name, "subfolder": "", "type": "input"}
        assert same["name"] == name
        assert clash["name"] == name.replace(".png", " (1).png")
        view = await http.get("/view", params={"filename": name, "type": "input"})
        assert view.status_code == 200 and view.content == buf.getvalue()
        assert view.headers["content-type"] == "image/png"
        annotated = await http.get("/view", params={"filename": f"{name} [input]"})
        assert annotated.status_code == 200
        assert (await http.get("/view", params={"filename": "../x.png"})).status_code == 400
        assert (await http.get("/view", params={"filename": name, "type": "x"})).status_code == 400
        escape = await http.get("/view", params={"filename": name, "subfolder": "../.."})
        assert escape.status_code == 403
        assert (await http.get("/view", params={"filename": "nope.png"})).status_code == 404
        assert (await http.get("/view")).status_code == 404


async def test_object_info_lists_models_from_disk_in_both_combo_encodings(
    comfy_faults_reset: ComfyServer,
) -> None:
    async with httpx.AsyncClient(base_url=comfy_faults_reset.url) as http:
        ckpt = (await http.get("/object_info/CheckpointLoaderSimple")).json()
        up = (await http.get("/api/object_info/UpscaleModelLoader")).json()
        v3 = (await http.get("/object_info/ImageScaleToTotalPixels")).json()
        missing = (await http.get("/object_info/NoSuchNode")).json()
        everything = (await http.get("/object_info")).json()
        stats = (await http.get("/system_stats")).json()
        features = (await http.get("/features")).json()
        models = (await http.get("/models/checkpoints")).json()
        unknown = await http.get("/models/nope")
    names, _extra = ckpt["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    assert {"sdxl-base-1.0.safetensors", "flux1-dev.safetensors"} <= set(names)
    # 0.3.64: UpscaleModelLoader is a legacy node; ImageScaleToTotalPixels one of its V3 nodes.
    [upscalers] = up["UpscaleModelLoader"]["input"]["required"]["model_name"]
    assert {"2x-standin.safetensors", "4x-standin.safetensors"} <= set(upscalers)
    kind, options = v3["ImageScaleToTotalPixels"]["input"]["required"]["upscale_method"]
    assert kind == "COMBO" and "lanczos" in options["options"]
    assert missing == {}
    assert {"KSampler", "SaveImage", "Florence2Run", "RemoveBackground"} <= set(everything)
    assert stats["system"]["comfyui_version"] == "0.3.64"
    assert features == {"supports_preview_metadata": True, "max_upload_size": 104857600}
    assert "sdxl-base-1.0.safetensors" in models and unknown.status_code == 404


async def test_a_socket_without_prompt_gets_only_broadcasts(
    comfy_faults_reset: ComfyServer,
) -> None:
    """A prompt without client_id: its progress is broadcast, its executing/executed are not."""
    async with Session(comfy_faults_reset) as watcher:
        r = await watcher.http.post(
            "/prompt", json={"prompt": txt2img(steps=2, text=unique(), prefix=unique()),
                             "prompt_id": str(uuid.uuid4())})  # fmt: skip
        prompt_id = r.json()["prompt_id"]
        seen: list[str] = []
        assert watcher.ws is not None
        async with asyncio.timeout(10):
            while True:
                msg = json.loads(await watcher.ws.recv())
                seen.append(msg["type"])
                if msg["type"] == "status" and msg["data"]["status"]["exec_info"][
                    "queue_remaining"] == 0:  # fmt: skip
                    break
        assert (await watcher.history(prompt_id))["status"]["status_str"] == "success"
    assert "progress" in seen and "progress_state" in seen
    assert "executing" not in seen and "executed" not in seen and "execution_start" not in seen
