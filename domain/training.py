"""LoRA training rules (docs/domain.md "LoRA training"): datasets, parameters, quotes, trigger
words, and how a prompt asks for a trained model (`<lora:NAME:WEIGHT>` or a model's trigger
word).

Pure and deterministic: the workflow sandbox imports these models, and the jobs client runs the
same checks before it starts anything, so bad input is refused with nothing charged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any, Literal

from pydantic import BaseModel, Field

from domain.errors import FieldError, SettingsError, StationError, UserInputError
from domain.jobs import LoraFile, ReplyTarget
from domain.pricing import quote_training
from domain.rules import DEFAULT_RULES, PriceRules

Family = Literal["sdxl", "flux", "sd15"]
FAMILIES: tuple[str, ...] = ("sdxl", "flux", "sd15")
# Training resolution per base family: dataset images are square-cropped and resized to it.
TRAINING_RESOLUTION: dict[str, int] = {"sdxl": 1024, "flux": 1024, "sd15": 512}
# The checkpoint each family trains on is the operator's: templates/train-lora.json
# `choices.checkpoint` (family -> file), overridden by `Config.training_checkpoints`.
TRAINING_CHECKPOINT_INPUT = "checkpoint"

MIN_IMAGES = 4
MAX_IMAGES = 20
MAX_CAPTION_CHARS = 1000
STEPS_MIN, STEPS_MAX, STEPS_DEFAULT = 100, 5000, 1500
LR_MIN, LR_MAX, LR_DEFAULT = 1e-6, 1e-2, 1e-4
RANK_MIN, RANK_MAX, RANK_DEFAULT = 1, 128, 16
DEFAULT_WEIGHT = 0.8
WEIGHT_MIN, WEIGHT_MAX = -4.0, 4.0
DEFAULT_CHUNK_STEPS = 250
# How many trained LoRAs one prompt may use (the service passes Config.max_loras_per_prompt).
DEFAULT_MAX_LORAS = 3
TRIGGER_MIN, TRIGGER_MAX = 4, 32

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_TRIGGER = re.compile(rf"^[A-Za-z][A-Za-z0-9_-]{{{TRIGGER_MIN - 1},{TRIGGER_MAX - 1}}}$")
_LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^<>]*))?>", re.IGNORECASE)


class NotFound(StationError):
    """A dataset or model that does not exist *for this user* (others' look the same)."""

    code = "not_found"


# ---- models --------------------------------------------------------------------------------


class TrainingParams(BaseModel):
    family: Family = "sdxl"
    steps: int = STEPS_DEFAULT
    learning_rate: float = LR_DEFAULT
    rank: int = RANK_DEFAULT


class DatasetImage(BaseModel):
    image_id: str  # the prepared (square, training-resolution) PNG in GridFS
    original_id: str  # the image as the user sent it (normalised PNG), kept
    caption: str = ""
    caption_source: Literal["", "user", "auto"] = ""


class Dataset(BaseModel):
    id: str
    owner: str
    name: str
    trigger_word: str = ""
    family: Family = "sdxl"
    images: list[DatasetImage] = Field(default_factory=list)
    created_at: datetime | None = None
    # Bumped by every change of its images or captions (store/datasets.py): a caption run is
    # named by it, so requests made against the same state join one paid run.
    revision: int = 0

    def uncaptioned(self) -> list[DatasetImage]:
        return [im for im in self.images if not im.caption.strip()]


class LoraModel(BaseModel):
    """A trained LoRA: the `models` record (the file itself is in GridFS bucket `models`)."""

    id: str = ""
    name: str
    owner: str
    trigger_word: str
    family: Family = "sdxl"
    default_weight: float = DEFAULT_WEIGHT
    params: dict[str, Any] = Field(default_factory=dict)
    dataset_id: str = ""
    dataset_hash: str = ""
    blob_id: str
    filename: str  # the name it has in a ComfyUI loras folder
    size: int = 0
    sha256: str = ""
    public: bool = False
    workflow_id: str = ""
    created_at: datetime | None = None

    def file(self, weight: float | None = None) -> LoraFile:
        return LoraFile(
            name=self.name,
            filename=self.filename,
            blob_id=self.blob_id,
            sha256=self.sha256,
            size=self.size,
            weight=self.default_weight if weight is None else weight,
        )


class TrainRequest(BaseModel):
    """One `train` command: which dataset (name or id), the parameters, and the model name."""

    user: str
    platform: str = "cli"
    dataset: str
    params: TrainingParams = Field(default_factory=TrainingParams)
    model_name: str | None = None  # default: the dataset's name
    reply: ReplyTarget | None = None
    request_id: str | None = None


class TrainImage(BaseModel):
    image_id: str
    caption: str = ""  # empty: to be captioned by the captioning stage


class TrainSpec(BaseModel):
    """What prepare decided for a training run (carried in JobPlan.settings["training"])."""

    dataset_id: str
    dataset_name: str
    dataset_hash: str
    owner: str
    trigger_word: str
    model_name: str
    params: TrainingParams
    resolution: int
    checkpoint: str
    images: list[TrainImage]
    chunk_steps: int = DEFAULT_CHUNK_STEPS
    caption_parallel: int = 3
    caption_work: list[dict[str, Any]] = Field(default_factory=list)  # ComfyWork per uncaptioned
    # The GPU queue of the caption prompts (servers with the caption nodes, domain/routing.py);
    # empty: the job's own comfy queue (a plan from before captions were routed).
    caption_queue: str = ""


class ChunkInput(BaseModel):
    workflow_id: str
    chunk: int
    start_step: int
    steps: int
    total_steps: int
    spec: TrainSpec
    captions: dict[str, str] = Field(default_factory=dict)  # image id -> caption for this run
    previous: LoraFile | None = None
    timeout_seconds: float = 3600.0


class ChunkResult(BaseModel):
    chunk: int
    steps_done: int
    blob_id: str
    filename: str
    sha256: str
    size: int
    server_url: str = ""
    loss: float | None = None
    gpu_seconds: float = 0.0
    reattached: bool = False


class TrainingProgress(BaseModel):
    """Signal `training_progress` from a running chunk (throttled by the activity)."""

    chunk: int
    step: int
    total_steps: int
    loss: float | None = None


class CaptionsInput(BaseModel):
    """Store generated captions: only where the image still has none."""

    owner: str
    dataset_id: str
    trigger_word: str
    captions: dict[str, str]


class CaptionsResult(BaseModel):
    captions: dict[str, str]  # image id -> the caption each image has now
    written: int = 0


class RegisterModelInput(BaseModel):
    workflow_id: str
    spec: TrainSpec
    final: ChunkResult


class CaptionRequest(BaseModel):
    """`dataset caption`: caption every uncaptioned image of a dataset (paid per image, see
    `quote_captions`)."""

    user: str
    dataset: str


class CaptionPrepareInput(BaseModel):
    workflow_id: str
    request: CaptionRequest


class CaptionPlan(BaseModel):
    owner: str = ""
    dataset_id: str = ""
    trigger_word: str = ""
    work: dict[str, dict[str, Any]] = Field(default_factory=dict)  # image id -> ComfyWork
    refused: str | None = None
    comfy_queue: str = "comfy"
    render_timeout: float = 900.0
    heartbeat_timeout: float = 30.0
    parallel: int = 3
    # The quote (`quote_captions`): charged before the first prompt, refunded per image that
    # got no caption. Zero in plans from before captioning was paid.
    dataset_name: str = ""
    per_image: int = 0
    price: int = 0
    balance: int = 0


class CaptionOutcome(BaseModel):
    dataset_id: str = ""
    captioned: int = 0
    failed: dict[str, str] = Field(default_factory=dict)
    refused: str | None = None
    workflow_id: str = ""
    price: int = 0  # charged (before any refund)
    refunded: int = 0  # given back for the images that got no caption
    balance: int | None = None  # after the charge and refund


class DatasetImagesRequest(BaseModel):
    """Add images (already safety-checked and stored as originals) to a dataset."""

    user: str
    dataset: str
    originals: list[str]
    user_id: str = ""
    resolution: int = 1024
    media_queue: str = "media"
    # The content filter for dataset images (issue 19): under `block` each prepared image is
    # classified and a flagged one refuses the whole add. Defaults keep older requests valid.
    safety: str = "off"
    safety_threshold: float = 0.5
    safety_queue: str = "safety"


class PrepareImageInput(BaseModel):
    workflow_id: str
    index: int
    user_id: str
    original_id: str
    resolution: int


class AddImagesInput(BaseModel):
    user: str
    dataset: str
    images: list[tuple[str, str]]  # (original id, prepared id)


class DatasetImagesResult(BaseModel):
    dataset_id: str = ""
    added: int = 0
    total: int = 0
    refused: str | None = None


# ---- rules ---------------------------------------------------------------------------------


def check_name(name: str, what: str = "dataset") -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise UserInputError(
            f"{what} name {name!r}: 1-48 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit"
        )
    return name


@cache
def common_words() -> frozenset[str]:
    """The shipped list of common English words (domain/data/common_words.txt), read once.

    Read on first use, not at import: the workflow sandbox imports this module and never needs
    the list (only the jobs client and activities check trigger words)."""
    text = files("domain").joinpath("data/common_words.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def suggest_trigger(word: str) -> str:
    """A made-up variant of `word` that passes the rules: `word_` plus four characters derived
    from it (deterministic, so the same word always gets the same suggestion)."""
    base = re.sub(r"[^A-Za-z0-9_-]", "", word)[: TRIGGER_MAX - 5] or "zq"
    if not base[0].isalpha():
        base = "zq" + base[: TRIGGER_MAX - 7]
    digest = hashlib.sha256(word.lower().encode()).hexdigest()
    suffix = "".join("qxzjkv"[int(c, 16) % 6] if c.isdigit() else c for c in digest[:4])
    return f"{base}_{suffix}"


def check_trigger_word(word: str) -> str:
    """A trigger word that cannot turn up in a prompt by chance: one word of 4-32 letters,
    digits, '_' or '-' starting with a letter, and not an ordinary English word."""
    word = word.strip()
    if not _TRIGGER.match(word):
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", word) and len(word) < TRIGGER_MIN:
            raise UserInputError(
                f"trigger word {word!r} is too short: at least {TRIGGER_MIN} characters, so it "
                f"cannot appear in a prompt by chance; pick a made-up word such as "
                f"{suggest_trigger(word)!r}"
            )
        raise UserInputError(
            f"trigger word {word!r}: {TRIGGER_MIN}-{TRIGGER_MAX} letters, digits, '_' or '-', "
            "starting with a letter (one made-up word, so it cannot appear in a prompt by chance)"
        )
    if word.lower() in common_words():
        raise UserInputError(
            f"trigger word {word!r} is an ordinary English word, so it would turn up in prompts "
            f"by chance; pick a made-up word such as {suggest_trigger(word)!r}"
        )
    return word


def trigger_is_safe(word: str) -> bool:
    """Whether `word` passes today's trigger rules (older models may have a weaker one)."""
    try:
        check_trigger_word(word)
    except UserInputError:
        return False
    return True


def check_caption(caption: str) -> str:
    caption = " ".join(caption.split())
    if len(caption) > MAX_CAPTION_CHARS:
        raise UserInputError(
            f"the caption is {len(caption)} characters; the limit is {MAX_CAPTION_CHARS}"
        )
    return caption


def check_params(params: TrainingParams) -> TrainingParams:
    """All-or-nothing: every field out of range is named."""
    errors: list[FieldError] = []
    if params.family not in FAMILIES:
        errors.append(FieldError("family", f"one of {', '.join(FAMILIES)}"))
    if not STEPS_MIN <= params.steps <= STEPS_MAX:
        errors.append(FieldError("steps", f"{STEPS_MIN} … {STEPS_MAX}; got {params.steps}"))
    if not LR_MIN <= params.learning_rate <= LR_MAX:
        errors.append(
            FieldError("learning_rate", f"{LR_MIN:g} … {LR_MAX:g}; got {params.learning_rate:g}")
        )
    if not RANK_MIN <= params.rank <= RANK_MAX:
        errors.append(FieldError("rank", f"{RANK_MIN} … {RANK_MAX}; got {params.rank}"))
    if errors:
        raise SettingsError(errors)
    return params


def check_image_count(count: int) -> None:
    if count < MIN_IMAGES:
        raise UserInputError(
            f"the dataset has {count} image{'s' if count != 1 else ''}; "
            f"training needs at least {MIN_IMAGES}"
        )
    if count > MAX_IMAGES:
        raise UserInputError(f"the dataset has {count} images; the limit is {MAX_IMAGES}")


def has_word(text: str, word: str) -> bool:
    """Whether `word` appears in `text` as a whole word, case-insensitively."""
    if not word:
        return False
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text, re.I) is not None


def caption_with_trigger(caption: str, trigger: str) -> str:
    """The caption training sees: the trigger word first when the caption lacks it."""
    caption = " ".join(caption.split())
    if not trigger or has_word(caption, trigger):
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def check_trigger_clash(trigger: str, models: Iterable[LoraModel]) -> None:
    for m in models:
        if m.trigger_word.lower() == trigger.lower():
            raise UserInputError(
                f"trigger word {trigger!r} is already used by your model {m.name!r}; "
                "pick another one (dataset trigger WORD)"
            )


def quote(images: int, steps: int, rules: PriceRules = DEFAULT_RULES.prices) -> int:
    return quote_training(images, steps, rules)


def dataset_hash(
    images: Sequence[TrainImage], trigger: str, params: TrainingParams, resolution: int
) -> str:
    """SHA-256 of everything that decides the trained weights (images, captions, parameters)."""
    body = {
        "images": sorted([im.image_id, im.caption] for im in images),
        "trigger": trigger,
        "params": params.model_dump(mode="json"),
        "resolution": resolution,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def chunk_size(total_steps: int, max_chunk: int) -> int:
    """The chunk size a job trains in: as few chunks as `max_chunk` allows, of equal size.

    Not simply `max_chunk`: ComfyUI's LossGraphNode (in the training graph) divides by the
    spread of a chunk's losses, so a 1-step remainder (251 steps in chunks of 250) fails its
    prompt on every real server (docs/real-comfyui.md). Equal chunks leave no such remainder
    for any step count of STEPS_MIN … STEPS_MAX with the default 250.
    """
    size = max(1, max_chunk)
    count = max(1, -(-total_steps // size))
    return max(1, -(-total_steps // count))


def chunks(total_steps: int, chunk_steps: int) -> list[tuple[int, int]]:
    """(start step, steps) of each chunk: equal chunks, the last one takes the rest."""
    size = max(1, chunk_steps)
    return [(s, min(size, total_steps - s)) for s in range(0, total_steps, size)]


# ---- using a model in a prompt -------------------------------------------------------------


class LoraUse(BaseModel):
    name: str
    weight: float | None = None  # None: the model's default weight


def parse_lora_tags(prompt: str) -> tuple[str, list[LoraUse]]:
    """Strip `<lora:NAME:WEIGHT>` tags from a prompt; returns the clean prompt and the uses."""
    uses: list[LoraUse] = []
    for m in _LORA_TAG.finditer(prompt):
        name, raw = m.group(1).strip(), (m.group(2) or "").strip()
        weight: float | None = None
        if raw:
            try:
                weight = float(raw)
            except ValueError:
                raise UserInputError(
                    f"<lora:{name}:{raw}>: the weight must be a number, e.g. <lora:{name}:0.8>"
                ) from None
            if not WEIGHT_MIN <= weight <= WEIGHT_MAX:
                raise UserInputError(
                    f"<lora:{name}:{raw}>: the weight must be {WEIGHT_MIN} … {WEIGHT_MAX}"
                )
        uses.append(LoraUse(name=name, weight=weight))
    clean = " ".join(_LORA_TAG.sub(" ", prompt).split())
    return clean, uses


def lora_tag_names(prompt: str) -> list[str]:
    """The distinct model names a prompt's `<lora:NAME>` tags ask for, lower case, in order."""
    return list(dict.fromkeys(m.group(1).strip().lower() for m in _LORA_TAG.finditer(prompt)))


def loras_for_prompt(
    prompt: str,
    mine: Sequence[LoraModel],
    public: Sequence[LoraModel] = (),
    *,
    max_loras: int = DEFAULT_MAX_LORAS,
) -> tuple[str, list[LoraFile]]:
    """Which trained models a prompt asks for: tags by name, then trigger words.

    Models are opt-in. `mine` is what the user chose: their own models, then the public ones
    they added to their list; a trigger word of these (whole word, and only if it passes
    today's trigger rules) adds the model. `public` are other users' public models, which apply
    only when a `<lora:NAME>` tag names them, so a published model never reaches a stranger's
    prompt through a word in it. A name in `mine` wins over a public one; two public models
    of the same name (neither added) are ambiguous. An unknown tag name is an error, and so is
    a prompt that would use more than `max_loras` models. The tags are removed from the
    prompt; trigger words stay (the LoRA was trained on them).
    """
    clean, uses = parse_lora_tags(prompt)
    named = list(dict.fromkeys(use.name.lower() for use in uses))
    if len(named) > max_loras:
        raise UserInputError(_too_many(len(named), max_loras))
    by_name: dict[str, LoraModel] = {}
    for m in mine:
        by_name.setdefault(m.name.lower(), m)
    others: dict[str, list[LoraModel]] = {}
    for m in public:
        others.setdefault(m.name.lower(), []).append(m)
    chosen: dict[str, LoraFile] = {}
    for use in uses:
        key = use.name.lower()
        model = by_name.get(key)
        if model is None:
            found = {m.blob_id: m for m in others.get(key, [])}
            if len(found) > 1:
                raise UserInputError(
                    f"{len(found)} public models are named {use.name!r}: add the one you mean "
                    "to your models by its id (models add ID), then name it"
                )
            model = next(iter(found.values()), None)
        if model is None:
            raise UserInputError(f"no model named {use.name!r} (see `models list`)")
        chosen[model.blob_id] = model.file(use.weight)
    for m in mine:
        if (
            m.blob_id not in chosen
            and trigger_is_safe(m.trigger_word)
            and has_word(clean, m.trigger_word)
        ):
            chosen[m.blob_id] = m.file()
    if len(chosen) > max_loras:
        raise UserInputError(_too_many(len(chosen), max_loras))
    if not clean:
        raise UserInputError("the prompt is empty once the <lora:...> tags are removed")
    return clean, list(chosen.values())


def _too_many(count: int, limit: int) -> str:
    return (
        f"the prompt uses {count} LoRAs; the limit is {limit} per prompt "
        "(remove a <lora:...> tag or a trigger word)"
    )


def add_lora_loaders(graph: Mapping[str, Any], loras: Sequence[LoraFile]) -> dict[str, Any]:
    """A copy of `graph` with one LoraLoader per LoRA chained after the checkpoint loader.

    Every node that used the checkpoint's MODEL (slot 0) or CLIP (slot 1) now uses the last
    LoraLoader's, so both the sampler and the text encoders see the LoRA.
    """
    out: dict[str, Any] = json.loads(json.dumps(dict(graph)))
    if not loras:
        return out
    loaders = [k for k, v in out.items() if v.get("class_type") == "CheckpointLoaderSimple"]
    if not loaders:
        raise UserInputError("this template has no checkpoint loader to add a LoRA to")
    ckpt = loaders[0]
    numeric = [int(k) for k in out if k.isdigit()]
    next_id = max(numeric, default=0) + 1
    model_src: list[Any] = [ckpt, 0]
    clip_src: list[Any] = [ckpt, 1]
    new_ids: list[str] = []
    for lora in loras:
        nid = str(next_id)
        next_id += 1
        out[nid] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model_src,
                "clip": clip_src,
                "lora_name": lora.filename,
                "strength_model": round(lora.weight, 2),
                "strength_clip": round(lora.weight, 2),
            },
            "_meta": {"title": f"LoRA {lora.name}"},
        }
        model_src, clip_src = [nid, 0], [nid, 1]
        new_ids.append(nid)
    for nid, node in out.items():
        if nid in new_ids:
            continue
        for key, value in node.get("inputs", {}).items():
            if value == [ckpt, 0]:
                node["inputs"][key] = list(model_src)
            elif value == [ckpt, 1]:
                node["inputs"][key] = list(clip_src)
    return out


def lora_filename(owner: str, name: str, sha256: str) -> str:
    """The file name a model has in a ComfyUI loras folder: unique per content."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
    return f"st/{owner[:12]}-{safe}-{sha256[:12]}.safetensors"


def chunk_prefix(workflow_id: str, chunk: int) -> str:
    """SaveLoRA prefix of one chunk (under output/loras/); unique per workflow and chunk."""
    digest = hashlib.sha256(workflow_id.encode()).hexdigest()[:16]
    return f"loras/st_{digest}_c{chunk}"


def steps_in_name(filename: str) -> int:
    """N from a LoRA named `…_N_steps_…` (how ComfyUI's TrainLoraNode resumes), else 0."""
    m = re.search(r"_(\d+)_steps_", filename)
    return int(m.group(1)) if m else 0


class TrainPrepareInput(BaseModel):
    workflow_id: str
    request: TrainRequest


class ChunkBeat(BaseModel):
    """Heartbeat details of a chunk: where its prompt runs, for a retry to re-attach."""

    server_url: str
    prompt_id: str
    step: int = 0
    # Progress for `status()` (heartbeats write no history; no `training_progress` signal):
    # 0 in the beats of an older release, which signalled its steps instead.
    total_steps: int = 0


# ---- the price of `dataset caption` ---------------------------------------------------------

# Points per image `dataset caption` sends to the GPU (docs/domain.md "Prices": quoted first,
# charged once, refunded per image that got no caption). Training's own captioning stage is part
# of the training price and stays free.
CAPTION_PRICE_PER_IMAGE = 2


def quote_captions(images: int, per_image: int = CAPTION_PRICE_PER_IMAGE) -> int:
    """`per_image × images`: what captioning `images` images costs."""
    if images < 0 or per_image < 0:
        raise ValueError("images and the price per image cannot be negative")
    return per_image * images


def expand_dataset_images(
    graph: Mapping[str, Any], load_node: str, images: Sequence[str]
) -> dict[str, Any]:
    """A copy of a training graph whose one LoadImage (`load_node`) becomes one LoadImage per
    dataset file, chained by ImageBatch; every node that read the single image reads the batch.

    This is how a server without the dataset-folder nodes (ComfyUI 0.3.64 core) trains: the
    comfy worker has written the dataset under `input/<folder>/`, and LoadImage takes
    `<folder>/<file>`. The images are all the training resolution, so ImageBatch keeps them.
    """
    if not images:
        raise UserInputError("a training dataset needs images")
    out = {k: dict(v, inputs=dict(v.get("inputs", {}))) for k, v in graph.items()}
    out[load_node]["inputs"]["image"] = images[0]
    next_id = max((int(k) for k in out if k.isdigit()), default=0) + 1
    last = load_node
    for name in images[1:]:
        image_id, batch_id = str(next_id), str(next_id + 1)
        next_id += 2
        out[image_id] = {
            "class_type": "LoadImage",
            "inputs": {"image": name},
            "_meta": {"title": f"dataset image {name}"},
        }
        out[batch_id] = {
            "class_type": "ImageBatch",
            "inputs": {"image1": [last, 0], "image2": [image_id, 0]},
            "_meta": {"title": "Batch Images"},
        }
        last = batch_id
    if last != load_node:
        added = {k for k in out if k not in graph}
        for node_id, node in out.items():
            if node_id in added:
                continue
            for key, value in node["inputs"].items():
                if value == [load_node, 0]:
                    node["inputs"][key] = [last, 0]
    return out
