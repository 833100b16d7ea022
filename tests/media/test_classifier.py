"""The output classifier: NudeNet's real ONNX model (from the pinned `safety` extra, nothing
downloaded) on generated images, and the stand-in's marker seam."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from domain.safety import DEFAULT_THRESHOLD
from media.classifier import MarkerClassifier, NudeNetClassifier, mark_unsafe
from standins.comfyui import render


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def portrait_like() -> Image.Image:
    """Skin-toned shapes on a background: the closest a test can get to a person."""
    img = Image.new("RGB", (512, 640), (90, 120, 160))
    d = ImageDraw.Draw(img)
    d.ellipse((176, 80, 336, 260), fill=(224, 172, 140))
    d.rectangle((150, 260, 362, 640), fill=(60, 60, 70))
    return img


@pytest.fixture(scope="module")
def nudenet() -> NudeNetClassifier:
    return NudeNetClassifier()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_images_are_not_flagged(nudenet: NudeNetClassifier, seed: int) -> None:
    img = render.generate({"positive": "a red fox in snow", "seed": seed}, 512, 512)
    score, label = nudenet.classify(encoded(img))
    assert 0.0 <= score < DEFAULT_THRESHOLD, (score, label)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_every_stored_format_and_mode_is_read(nudenet: NudeNetClassifier, fmt: str) -> None:
    img = portrait_like()
    if fmt == "PNG":
        img = img.convert("RGBA")  # an rmbg result has alpha
    score, _ = nudenet.classify(encoded(img, fmt))
    assert 0.0 <= score < DEFAULT_THRESHOLD


def test_the_model_ships_in_the_wheel_and_runs_on_the_cpu(nudenet: NudeNetClassifier) -> None:
    session = nudenet._detector.onnx_session
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert nudenet.name == "nudenet-3.4-320n"


def test_the_marker_seam_flags_only_the_stand_ins_mark() -> None:
    marker = MarkerClassifier()
    img = render.generate({"positive": "a fox"}, 256, 256)
    assert marker.classify(encoded(img)) == (0.0, "")
    score, label = marker.classify(encoded(mark_unsafe(img)))
    assert score >= DEFAULT_THRESHOLD and label == "STANDIN_MARK"
    assert marker.classify(encoded(Image.new("RGB", (8, 8)))) == (0.0, "")
