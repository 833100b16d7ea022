"""The output classifier: a score in [0, 1] per image, how likely it shows nudity.

`NudeNetClassifier` runs NudeNet 3.4's detector (a YOLOv8n ONNX model of 12 MB that ships in
the `nudenet` wheel, 320 px input) on the CPU with onnxruntime: nothing is downloaded at run
time. It is an optional extra (`pip install '.[safety]'`): the wheel carries an AGPL-3.0
licence text (its metadata says MIT), which an operator may not want in a closed deployment.
The score of an image is the highest score among the detector's *exposed* classes; covered
parts and faces do not count.

Tests and the stand-in stack use the seam instead of the model: `MarkerClassifier` flags an
image that carries the deterministic "unsafe" mark (`mark_unsafe`), so the policy paths are
tested without a real nude image, and `FixedClassifier` answers a fixed score.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Protocol

from PIL import Image

# NudeNet's classes that make an image unsafe to show in a shared chat.
EXPOSED = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)


# Images are shrunk to this many pixels a side before the detector (its input is 320 px).
INPUT_SIDE = 640


class Classifier(Protocol):
    """Scores one encoded image (PNG, JPEG, WebP bytes)."""

    name: str

    def classify(self, data: bytes) -> tuple[float, str]:
        """(score, label): the score in [0, 1] and the class that gave it ("" if none)."""
        ...


class ClassifierUnavailable(RuntimeError):
    """The `safety` extra is not installed."""


class NudeNetClassifier:
    """NudeNet's 320n detector on the CPU. The ONNX session is made once per process (0.5 s,
    about 120 MB) and shared by the worker's threads; onnxruntime's `run` is thread-safe."""

    name = "nudenet-3.4-320n"

    def __init__(self, threads: int = 1) -> None:
        try:
            import nudenet
            import onnxruntime
            from nudenet import NudeDetector
        except ImportError as err:
            raise ClassifierUnavailable(
                "the output classifier needs the optional `safety` extra: "
                "pip install '.[safety]' (NudeNet, onnxruntime, OpenCV; see README "
                '"Content safety")'
            ) from err
        self._detector = NudeDetector()
        # One intra-op thread: the worker runs one activity per core instead, and a shared
        # 2-core machine is not taken over by one image.
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        model = Path(nudenet.__file__).with_name("320n.onnx")
        self._detector.onnx_session = onnxruntime.InferenceSession(
            str(model), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def classify(self, data: bytes) -> tuple[float, str]:
        # Decoded by Pillow (OpenCV reads neither every PNG mode the service stores nor WebP
        # with alpha), shrunk to at most INPUT_SIDE a side first (the model sees 320 px, so
        # a 2048 px image costs what a 640 px one does), handed over as a BGR array.
        import numpy as np

        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (INPUT_SIDE, INPUT_SIDE))  # JPEG: decode at a reduced scale
            rgb = im.convert("RGB")
        rgb.thumbnail((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        found = self._detector.detect(bgr)
        best, label = 0.0, ""
        for det in found:
            if det["class"] in EXPOSED and float(det["score"]) > best:
                best, label = float(det["score"]), str(det["class"])
        return round(best, 4), label


class FixedClassifier:
    """The seam for tests: every image gets the same score."""

    name = "fixed"

    def __init__(self, score: float, label: str = "TEST") -> None:
        self.score = score
        self.label = label
        self.seen: list[bytes] = []

    def classify(self, data: bytes) -> tuple[float, str]:
        self.seen.append(data)
        return self.score, self.label if self.score else ""


# The word that makes the ComfyUI stand-in draw the mark into what it renders.
STANDIN_UNSAFE_WORD = "standin-unsafe"

# The mark: a 16x16 corner of exact magenta over exact green, which no sampler draws by chance.
_MARK = ((255, 0, 255), (0, 255, 0))
MARK_SIZE = 16


def mark_unsafe(img: Image.Image) -> Image.Image:
    """Return a copy of `img` with the deterministic "unsafe" mark in its top-left corner."""
    out = img.convert("RGB").copy()
    half = MARK_SIZE // 2
    for y in range(MARK_SIZE):
        for x in range(MARK_SIZE):
            out.putpixel((x, y), _MARK[0] if y < half else _MARK[1])
    return out


class MarkerClassifier:
    """The stand-in's classifier: score 0.99 for an image that carries `mark_unsafe`'s mark,
    0 otherwise. For the dev stack and tests, never a real deployment."""

    name = "marker"

    def classify(self, data: bytes) -> tuple[float, str]:
        with Image.open(io.BytesIO(data)) as im:
            if im.width < MARK_SIZE or im.height < MARK_SIZE:
                return 0.0, ""
            rgb = im.convert("RGB")
            half = MARK_SIZE // 2
            top = rgb.getpixel((half // 2, half // 2))
            bottom = rgb.getpixel((half // 2, half + half // 2))
        if top == _MARK[0] and bottom == _MARK[1]:
            return 0.99, "STANDIN_MARK"
        return 0.0, ""


def make_classifier(name: str) -> Classifier:
    """The classifier a safety worker runs: `nudenet` (the default) or `marker` (stand-in)."""
    if name == "marker":
        return MarkerClassifier()
    if name == "nudenet":
        return NudeNetClassifier()
    raise ValueError(f"unknown classifier {name!r} (nudenet, marker)")
