"""Reading what the server offers: node metadata, combo options, system stats."""

from __future__ import annotations

import pytest

from comfy.client import ComfyClient
from comfy.errors import ComfyError, ComfyMissingNode


async def test_combo_options_read_the_legacy_encoding(comfy: ComfyClient) -> None:
    raw = (await comfy.object_info("KSampler"))["KSampler"]["input"]["required"]["sampler_name"]
    assert isinstance(raw[0], list), "KSampler should use the legacy [[...], {}] encoding"
    options = await comfy.combo_options("KSampler", "sampler_name")
    assert "euler" in options
    assert options == raw[0]


async def test_combo_options_read_the_v3_encoding(comfy: ComfyClient) -> None:
    # A schema-V3 node of 0.3.64 core (UpscaleModelLoader is still a legacy node there).
    info = await comfy.object_info("ImageScaleToTotalPixels")
    raw = info["ImageScaleToTotalPixels"]["input"]["required"]["upscale_method"]
    assert raw[0] == "COMBO", "ImageScaleToTotalPixels should use the V3 COMBO encoding"
    options = await comfy.combo_options("ImageScaleToTotalPixels", "upscale_method")
    assert options == raw[1]["options"] and "bilinear" in options


async def test_model_file_combos_read_the_encoding_the_server_uses(comfy: ComfyClient) -> None:
    """The upscale loader's files, whichever encoding this server's version gives it."""
    raw = (await comfy.object_info("UpscaleModelLoader"))["UpscaleModelLoader"]["input"]
    config = raw["required"]["model_name"]
    files = config[1]["options"] if config[0] == "COMBO" else config[0]
    assert await comfy.combo_options("UpscaleModelLoader", "model_name") == files


async def test_asking_for_options_of_an_unknown_node_or_input_fails_clearly(
    comfy: ComfyClient,
) -> None:
    assert await comfy.object_info("NoSuchNode") == {}
    with pytest.raises(ComfyMissingNode) as caught:
        await comfy.combo_options("NoSuchNode", "x")
    assert caught.value.class_type == "NoSuchNode"
    with pytest.raises(ComfyError, match="no input"):
        await comfy.combo_options("KSampler", "no_such_input")
    with pytest.raises(ComfyError, match="not a combo"):
        await comfy.combo_options("KSampler", "steps")


async def test_the_full_object_info_lists_the_core_nodes(comfy: ComfyClient) -> None:
    info = await comfy.object_info()
    assert {"KSampler", "SaveImage", "LoadImage", "CheckpointLoaderSimple"} <= set(info)


async def test_system_stats_name_the_server_version(comfy: ComfyClient) -> None:
    stats = await comfy.system_stats()
    assert stats["system"]["comfyui_version"]


async def test_the_api_prefix_is_accepted_in_the_base_url(comfy_url: str) -> None:
    async with ComfyClient(comfy_url + "/api") as prefixed:
        assert "euler" in await prefixed.combo_options("KSampler", "sampler_name")
