"""LoRA training activities.

- `stationthis` queue (`TrainingActivities`, sync, pymongo): prepare a training run (checks,
  quote, plan), store generated captions, register the trained model, plan captioning, add
  prepared images to a dataset.
- `media` queue (`DatasetMediaActivities`): one dataset image through the safety checks,
  square-cropped and resized to the training resolution.
- `comfy` queue (`TrainingComfyActivities`): one training chunk = one ComfyUI prompt that
  continues from the previous chunk's LoRA (`existing_lora`, `…_N_steps_…` naming) and saves
  its own; the file is copied to GridFS bucket `models` before the activity returns.

Crash safety of a chunk: its result is stored under the key `<workflow id>:chunk:<n>`, so a
retry after the copy returns at once; the heartbeat records which server and prompt it runs,
so a retry after a worker crash re-attaches to the prompt still training on that server (no
step redone); only when the server lost the prompt (it restarted) does the retry submit the
chunk again, from the previous chunk's LoRA: at most one chunk of steps is redone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from PIL import Image
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.comfy import earlier_prompts, follow_earlier_prompt, to_application_error
from activities.heartbeat import heartbeat_forever
from activities.jobs import plan_or_refusal
from comfy.client import ComfyClient
from comfy.errors import ComfyError
from comfy.lora_cache import LoraCache
from comfy.models import Progress as ComfyProgress
from comfy.models import RunResult
from domain.errors import StationError, UserInputError
from domain.jobs import ActivityNames, ComfyWork, JobPlan, LoraFile
from domain.safety import PromptBlocked
from domain.training import (
    CAPTION_PRICE_PER_IMAGE,
    FAMILY_CHECKPOINTS,
    TRAINING_RESOLUTION,
    AddImagesInput,
    CaptionPlan,
    CaptionPrepareInput,
    CaptionsInput,
    CaptionsResult,
    ChunkBeat,
    ChunkInput,
    ChunkResult,
    DatasetImagesResult,
    LoraModel,
    PrepareImageInput,
    RegisterModelInput,
    TrainImage,
    TrainPrepareInput,
    TrainSpec,
    caption_with_trigger,
    check_image_count,
    check_name,
    check_params,
    check_trigger_clash,
    check_trigger_word,
    chunk_prefix,
    dataset_hash,
    lora_filename,
    quote,
    quote_captions,
)
from media.safety import DEFAULT_LIMITS, ImageLimits, load_image
from store.blobs import BlobNotFound, BlobStore
from store.db import Stores

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 2.0
NO_FOLDER = (
    "no folder is configured for this ComfyUI server (COMFYUI_DIRS or COMFYUI_DIR of its "
    "comfy worker)"
)
NO_FOLDER_TYPE = "comfyui_dir_not_configured"
TRAIN_NODE = "4"  # TrainLoraNode's id in templates/train-lora.json (progress comes from it)


class TrainingActivities:
    """The `stationthis`-queue side: checks, plans and records (run as local activities)."""

    def __init__(
        self,
        stores: Stores,
        *,
        comfy_queue: str = "comfy",
        comfy_io_queue: str = "comfy-io",
        media_queue: str = "media",
        render_timeout: float = 900.0,
        heartbeat_timeout: float = 30.0,
        chunk_steps: int = 250,
        chunk_timeout: float = 3600.0,
    ) -> None:
        self.stores = stores
        self.comfy_queue = comfy_queue
        self.comfy_io_queue = comfy_io_queue
        self.media_queue = media_queue
        self.render_timeout = render_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.chunk_steps = chunk_steps
        self.chunk_timeout = chunk_timeout

    def all(self) -> list[Any]:
        return [
            self.prepare_train_lora,
            self.save_captions,
            self.register_model,
            self.prepare_captions,
            self.add_dataset_images,
        ]

    # ---- training ----------------------------------------------------------------------------

    @activity.defn(name=ActivityNames.PREPARE_TRAIN_LORA)
    def prepare_train_lora(self, inp: TrainPrepareInput) -> JobPlan:
        return plan_or_refusal(
            self.stores,
            inp.request.user,
            "train",
            inp.workflow_id,
            lambda: self.plan_train_lora(inp),
        )

    def plan_train_lora(self, inp: TrainPrepareInput) -> JobPlan:
        """Every check before the charge; the jobs client runs it too, before starting."""
        req = inp.request
        user = self.stores.users.get(req.user)
        params = check_params(req.params)
        ds = self.stores.datasets.get(user.id, req.dataset)
        check_image_count(len(ds.images))
        if not ds.trigger_word:
            raise UserInputError(
                f"dataset {ds.name!r} has no trigger word yet (dataset trigger {ds.name} WORD)"
            )
        trigger = check_trigger_word(ds.trigger_word)
        check_trigger_clash(trigger, self.stores.models.owned(user.id))
        name = check_name(req.model_name or ds.name, "model")
        name = self.stores.models.free_name(user.id, name)
        images = [TrainImage(image_id=im.image_id, caption=im.caption) for im in ds.images]
        # The operator's block list, per caption: a LoRA learns what its captions name.
        if self.stores.safety.is_blocked(trigger):
            raise PromptBlocked("trigger word")
        for n, im in enumerate(images, 1):
            if self.stores.safety.is_blocked(im.caption):
                raise PromptBlocked(f"caption of dataset image {n}")
        resolution = TRAINING_RESOLUTION[params.family]
        caption_work: list[dict[str, Any]] = []
        missing = [im for im in images if not im.caption.strip()]
        if missing:
            template = self.stores.templates.get("caption")
            ref = template.inputs["image"]
            for im in missing:
                work = ComfyWork(graph=template.inject({}), uploads={ref.node: im.image_id})
                caption_work.append({"image_id": im.image_id, "work": work.model_dump()})
        spec = TrainSpec(
            dataset_id=ds.id,
            dataset_name=ds.name,
            dataset_hash=dataset_hash(images, trigger, params, resolution),
            owner=user.id,
            trigger_word=trigger,
            model_name=name,
            params=params,
            resolution=resolution,
            checkpoint=FAMILY_CHECKPOINTS[params.family],
            images=images,
            chunk_steps=self.chunk_steps,
            caption_work=caption_work,
        )
        price = quote(len(images), params.steps, self.stores.rules.prices)
        return JobPlan(
            user_id=user.id,
            kind="train",
            price=price,
            units=1,
            balance=user.points,
            summary=f"LoRA {name} ({params.family}, {params.steps} steps, {len(images)} images)",
            settings={
                "training": spec.model_dump(mode="json"),
                "render_timeout": self.render_timeout,
                "heartbeat_timeout": self.heartbeat_timeout,
                "chunk_timeout": self.chunk_timeout,
                "comfy_queue": self.comfy_queue,
                "comfy_io_queue": self.comfy_io_queue,
                "media_queue": self.media_queue,
                "params": params.model_dump(mode="json"),
                "dataset": ds.name,
            },
            template="train-lora",
        )

    @activity.defn(name=ActivityNames.SAVE_CAPTIONS)
    def save_captions(self, inp: CaptionsInput) -> CaptionsResult:
        """Generated captions, trigger word added, only where an image still has none."""
        ds, written = self.stores.datasets.set_auto_captions(
            inp.owner, inp.dataset_id, inp.captions, inp.trigger_word
        )
        return CaptionsResult(
            captions={im.image_id: im.caption for im in ds.images}, written=written
        )

    @activity.defn(name=ActivityNames.REGISTER_MODEL)
    def register_model(self, inp: RegisterModelInput) -> LoraModel:
        """The `models` record of a finished training (once per workflow)."""
        spec, final = inp.spec, inp.final
        data = self.stores.blobs.get(final.blob_id, "models")
        digest = hashlib.sha256(data).hexdigest()
        if digest != final.sha256:
            raise ApplicationError("the stored LoRA does not match its checksum", type="corrupt")
        model = LoraModel(
            name=spec.model_name,
            owner=spec.owner,
            trigger_word=spec.trigger_word,
            family=spec.params.family,
            params=spec.params.model_dump(mode="json"),
            dataset_id=spec.dataset_id,
            dataset_hash=spec.dataset_hash,
            blob_id=final.blob_id,
            filename=lora_filename(spec.owner, spec.model_name, digest),
            size=len(data),
            sha256=digest,
            workflow_id=inp.workflow_id,
        )
        return self.stores.models.create(model)

    # ---- captioning (dataset caption) --------------------------------------------------------

    @activity.defn(name=ActivityNames.PREPARE_CAPTIONS)
    def prepare_captions(self, inp: CaptionPrepareInput) -> CaptionPlan:
        try:
            user = self.stores.users.get(inp.request.user)
            ds = self.stores.datasets.get(user.id, inp.request.dataset)
        except StationError as err:
            return CaptionPlan(refused=err.message)
        template = self.stores.templates.get("caption")
        ref = template.inputs["image"]
        work = {
            im.image_id: ComfyWork(
                graph=template.inject({}), uploads={ref.node: im.image_id}
            ).model_dump()
            for im in ds.uncaptioned()
        }
        return CaptionPlan(
            owner=user.id,
            dataset_id=ds.id,
            dataset_name=ds.name,
            trigger_word=ds.trigger_word,
            work=work,
            comfy_queue=self.comfy_queue,
            render_timeout=self.render_timeout,
            heartbeat_timeout=self.heartbeat_timeout,
            per_image=CAPTION_PRICE_PER_IMAGE,
            price=quote_captions(len(work)),
            balance=user.points,
        )

    # ---- dataset images ----------------------------------------------------------------------

    @activity.defn(name=ActivityNames.ADD_DATASET_IMAGES)
    def add_dataset_images(self, inp: AddImagesInput) -> DatasetImagesResult:
        try:
            user = self.stores.users.get(inp.user)
            ds = self.stores.datasets.add_images(user.id, inp.dataset, list(inp.images))
        except StationError as err:
            return DatasetImagesResult(refused=err.message)
        return DatasetImagesResult(dataset_id=ds.id, added=len(inp.images), total=len(ds.images))


# ---- media queue ---------------------------------------------------------------------------


def square_resize(img: Image.Image, size: int) -> Image.Image:
    """Centre square crop, then resize to `size`² (Lanczos): what a training set expects."""
    side = min(img.width, img.height)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    square = img.crop((left, top, left + side, top + side))
    return square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


class DatasetMediaActivities:
    """`prepare_dataset_image` on the `media` queue (sync: Pillow in the worker's threads)."""

    def __init__(self, blobs: BlobStore, limits: ImageLimits = DEFAULT_LIMITS) -> None:
        self.blobs = blobs
        self.limits = limits

    def all(self) -> list[Any]:
        return [self.prepare_dataset_image]

    @activity.defn(name=ActivityNames.PREPARE_DATASET_IMAGE)
    def prepare_dataset_image(self, inp: PrepareImageInput) -> str:
        """The original, checked again, as a square PNG at the training resolution; once."""
        key = f"{inp.workflow_id}:{inp.index}:dataset"
        done = self.blobs.find_by_key(key)
        if done is not None:
            return done
        try:
            # Owner-checked again inside the workflow: its input, not the client, is what runs.
            data = self.blobs.get_owned(inp.original_id, inp.user_id, used_by=inp.workflow_id)
        except BlobNotFound:
            raise ApplicationError(
                f"image {inp.original_id!r} not found", type="bad_input", non_retryable=True
            ) from None
        try:
            loaded = load_image(data, self.limits)
        except UserInputError as err:
            raise ApplicationError(err.message, type=err.code, non_retryable=True) from None
        out = square_resize(loaded.image, inp.resolution)
        buf = io.BytesIO()
        out.save(buf, "PNG", compress_level=6)
        return self.blobs.put(
            buf.getvalue(),
            f"dataset-{inp.index}.png",
            "image/png",
            key=key,
            metadata={
                "user_id": inp.user_id,
                "kind": "dataset",
                "original_id": inp.original_id,
                "width": inp.resolution,
                "height": inp.resolution,
            },
        )


# ---- comfy queue ---------------------------------------------------------------------------


def chunk_prompt_id(workflow_id: str, chunk: int, attempt: int, run_id: str | None = None) -> str:
    """Derived, so the next attempt finds the prompt; per run for the same reason as
    `activities.comfy.prompt_id_for` (a reset run trains anew, untouched by the old run)."""
    suffix = f":{run_id}" if run_id else ""
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"stationthis:{workflow_id}:chunk{chunk}:{attempt}{suffix}")
    )


def dataset_folder_name(spec: TrainSpec, captions: dict[str, str]) -> str:
    """`input/<this>/`: named by content, so a folder that exists is the right one."""
    body = [[im.image_id, captions.get(im.image_id, im.caption)] for im in spec.images]
    raw = json.dumps([body, spec.trigger_word, spec.resolution], sort_keys=True).encode()
    return f"st_ds_{hashlib.sha256(raw).hexdigest()[:16]}"


class TrainingComfyActivities:
    """Training chunks on the ComfyUI server this worker runs beside (shared file system)."""

    def __init__(
        self,
        server_url: str,
        client: Client,
        stores: Stores,
        *,
        comfyui_dir: Path | None = None,
        cache_bytes: int = 20 * 1024**3,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.client = client
        self.stores = stores
        self.blobs = stores.blobs
        self._root = comfyui_dir
        self._cache: LoraCache | None = None
        self.cache_bytes = cache_bytes
        self.comfy = ComfyClient(self.server_url)

    async def aclose(self) -> None:
        await self.comfy.aclose()

    async def root(self) -> Path | None:
        """The server's base folder as configured (COMFYUI_DIRS / COMFYUI_DIR), or None.

        Never taken from the server's own answer (`/system_stats` argv): that is the server's
        word, and a worker that writes datasets and LoRA files wherever a server says could be
        pointed at any folder of its host (/etc, another service's data)."""
        return self._root

    async def cache(self) -> LoraCache | None:
        if self._cache is None:
            root = await self.root()
            if root is None:
                return None
            self._cache = LoraCache(
                root / "models" / "loras",
                lambda blob_id: self.blobs.get(blob_id, "models"),
                max_bytes=self.cache_bytes,
            )
        return self._cache

    async def ensure_loras(self, loras: list[LoraFile]) -> None:
        """Make every LoRA a graph names present in this server's loras folder."""
        if not loras:
            return
        cache = await self.cache()
        if cache is None:
            raise ApplicationError(
                f"{self.server_url} cannot use LoRA files: {NO_FOLDER}",
                type=NO_FOLDER_TYPE,
                non_retryable=True,
            )
        await cache.ensure_all(loras)

    @activity.defn(name=ActivityNames.TRAIN_LORA_CHUNK)
    async def train_lora_chunk(self, inp: ChunkInput) -> ChunkResult:
        key = f"{inp.workflow_id}:chunk:{inp.chunk}"
        done = await asyncio.to_thread(self.blobs.find_by_key, key, bucket="models")
        if done is not None:
            return await asyncio.to_thread(self._stored_result, done, inp)
        root = await self.root()
        cache = await self.cache()
        if root is None or cache is None:
            raise ApplicationError(
                f"{self.server_url} cannot train: {NO_FOLDER}",
                type=NO_FOLDER_TYPE,
                non_retryable=True,
            )
        info = activity.info()
        beat: dict[str, Any] = {}
        ticker = asyncio.create_task(heartbeat_forever(lambda: beat.get("beat")))
        reporter = _TrainingReporter()
        prompt_id = chunk_prompt_id(inp.workflow_id, inp.chunk, info.attempt, info.workflow_run_id)
        reattached = False
        try:
            result = await self._reattach(inp, info.attempt, beat, reporter)
            if result is not None:
                reattached = True
            else:
                graph = await self._graph(inp, root, cache)
                beat["beat"] = ChunkBeat(
                    server_url=self.server_url,
                    prompt_id=prompt_id,
                    step=inp.start_step,
                    total_steps=inp.total_steps,
                )
                activity.heartbeat(beat["beat"])

                async def on_progress(p: ComfyProgress) -> None:
                    await reporter.report(p, beat, inp)

                result = await self.comfy.run(
                    graph, prompt_id=prompt_id, on_progress=on_progress, timeout=inp.timeout_seconds
                )
        except asyncio.CancelledError:
            current = beat.get("beat")
            with contextlib.suppress(Exception):
                await asyncio.shield(self.comfy.cancel(current.prompt_id if current else prompt_id))
            raise
        except ComfyError as err:
            log.info("chunk %d of %s failed: %s", inp.chunk, inp.workflow_id, err.message)
            raise to_application_error(err) from err
        finally:
            ticker.cancel()
        return await asyncio.to_thread(self._store_chunk, inp, root, cache, result, reattached)

    async def _reattach(
        self, inp: ChunkInput, attempt: int, beat: dict[str, Any], reporter: _TrainingReporter
    ) -> RunResult | None:
        previous = (
            ChunkBeat(
                server_url=self.server_url,
                prompt_id=chunk_prompt_id(
                    inp.workflow_id, inp.chunk, attempt - 1, activity.info().workflow_run_id
                ),
            )
            if attempt > 1
            else None
        )

        async def on_progress(p: ComfyProgress) -> None:
            await reporter.report(p, beat, inp)

        found = await follow_earlier_prompt(
            self.comfy,
            self.server_url,
            earlier_prompts(ChunkBeat, previous),
            remember=lambda earlier: beat.__setitem__("beat", earlier),
            on_progress=on_progress,
            timeout=inp.timeout_seconds,
        )
        if found is not None:
            log.info(
                "chunk %d of %s: re-attached to %s", inp.chunk, inp.workflow_id, found.prompt_id
            )
        return found

    async def _graph(self, inp: ChunkInput, root: Path, cache: LoraCache) -> dict[str, Any]:
        spec = inp.spec
        folder = await asyncio.to_thread(self._write_dataset, inp, root)
        existing = "[None]"
        if inp.previous is not None:
            await asyncio.to_thread(cache.ensure, inp.previous)
            existing = inp.previous.filename
        template = await asyncio.to_thread(self.stores.templates.get, "train-lora")
        return template.inject(
            {
                "checkpoint": spec.checkpoint,
                "folder": folder,
                "steps": inp.steps,
                "learning_rate": spec.params.learning_rate,
                "rank": spec.params.rank,
                "seed": inp.chunk,
                "existing_lora": existing,
                "prefix": chunk_prefix(inp.workflow_id, inp.chunk),
            }
        )

    def _write_dataset(self, inp: ChunkInput, root: Path) -> str:
        """input/<folder>/<n>.png + <n>.txt (caption with trigger word); atomic, once."""
        spec = inp.spec
        name = dataset_folder_name(spec, inp.captions)
        target = root / "input" / name
        if target.is_dir():
            return name
        tmp = root / "input" / f".{name}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for n, im in enumerate(spec.images):
                data = self.blobs.get(im.image_id)
                (tmp / f"{n:02}.png").write_bytes(data)
                caption = caption_with_trigger(
                    inp.captions.get(im.image_id, im.caption), spec.trigger_word
                )
                (tmp / f"{n:02}.txt").write_text(caption, encoding="utf-8")
            try:
                tmp.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return name

    def _store_chunk(
        self, inp: ChunkInput, root: Path, cache: LoraCache, result: RunResult, reattached: bool
    ) -> ChunkResult:
        prefix = chunk_prefix(inp.workflow_id, inp.chunk)
        total = inp.start_step + inp.steps
        folder = root / "output" / Path(prefix).parent
        stem = Path(prefix).name
        found = sorted(
            folder.glob(f"{stem}_{total}_steps_*_.safetensors"), key=lambda p: p.stat().st_mtime
        )
        if not found:
            raise ApplicationError(
                f"ComfyUI finished chunk {inp.chunk} but wrote no LoRA file ({stem}_{total}_…)"
            )
        path = found[-1]
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        filename = f"st/{path.name}"
        blob_id = self.blobs.put(
            data,
            path.name,
            "application/octet-stream",
            bucket="models",
            key=f"{inp.workflow_id}:chunk:{inp.chunk}",
            metadata={
                "workflow_id": inp.workflow_id,
                "chunk": inp.chunk,
                "steps_done": total,
                "filename": filename,
                "sha256": digest,
                "user_id": inp.spec.owner,  # store.blobs.OWNER_FIELD (was `owner`: still read)
            },
        )
        cache.put(filename, data)  # the next chunk on this server needs no copy
        return ChunkResult(
            chunk=inp.chunk,
            steps_done=total,
            blob_id=blob_id,
            filename=filename,
            sha256=digest,
            size=len(data),
            server_url=self.server_url,
            gpu_seconds=result.execution_seconds or 0.0,
            reattached=reattached,
        )

    def _stored_result(self, blob_id: str, inp: ChunkInput) -> ChunkResult:
        meta = self.blobs.info(blob_id, "models")
        return ChunkResult(
            chunk=inp.chunk,
            steps_done=int(meta.metadata.get("steps_done", inp.start_step + inp.steps)),
            blob_id=blob_id,
            filename=str(meta.metadata.get("filename", "")),
            sha256=str(meta.metadata.get("sha256", "")),
            size=meta.length,
            server_url=self.server_url,
        )


class _TrainingReporter:
    """Step progress into the chunk's heartbeat details (the training node's `progress` events
    come once per step). No `training_progress` signal: that wrote history once a second for
    the whole training; `JobsClient.status()` reads the steps from the pending chunk instead."""

    async def report(self, p: ComfyProgress, beat: dict[str, Any], inp: ChunkInput) -> None:
        if p.node != TRAIN_NODE or p.value is None:
            return
        step = inp.start_step + int(p.value)
        current: ChunkBeat | None = beat.get("beat")
        if current is not None:
            beat["beat"] = current.model_copy(update={"step": step, "total_steps": inp.total_steps})
            activity.heartbeat(beat["beat"])
