"""Jobs: the typed requests, plans, progress and results every job kind shares.

These models cross the Temporal boundary (workflow inputs, activity inputs and results, queries,
updates), so every new field gets a default: running histories must keep decoding.
Images never travel here: only GridFS ids.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from domain.identity import id_fragment
from domain.queues import JobRoute


class JobState(StrEnum):
    STARTING = "starting"
    CHARGING = "charging"
    QUEUED = "queued"
    RUNNING = "running"
    STORING = "storing"
    DELIVERING = "delivering"
    DONE = "done"
    REFUSED = "refused"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @property
    def cancellable(self) -> bool:
        return self in CANCELLABLE_STATES


FINAL_STATES = frozenset({JobState.DONE, JobState.REFUSED, JobState.FAILED, JobState.CANCELLED})
CANCELLABLE_STATES = frozenset(
    {JobState.STARTING, JobState.CHARGING, JobState.QUEUED, JobState.RUNNING}
)

# Platforms whose adapter receives results pushed by a delivery worker. The others (cli, web)
# pull the result from the workflow themselves, so their jobs need no delivery step.
PUSH_PLATFORMS = frozenset({"telegram", "discord"})


class ActivityNames:
    """Activity names: a contract with running histories. Rename only with a migration."""

    PREPARE_MAKE_IMAGE = "prepare_make_image"
    PREPARE_MEDIA_JOB = "prepare_media_job"
    PROCESS_IMAGE = "process_image"
    CHARGE_POINTS = "charge_points"
    REFUND_POINTS = "refund_points"
    RECORD_JOB = "record_job"
    RELEASE_JOB_SLOT = "release_job_slot"
    RUN_COMFY_PROMPT = "run_comfy_prompt"
    STORE_COMFY_OUTPUTS = "store_comfy_outputs"
    DELIVER_RESULT = "deliver_result"
    CHECK_OUTPUTS = "check_outputs"  # the output classifier (activities/safety.py, `safety`)
    # LoRA training (activities/training.py)
    PREPARE_TRAIN_LORA = "prepare_train_lora"
    TRAIN_LORA_CHUNK = "train_lora_chunk"
    SAVE_CAPTIONS = "save_captions"
    REGISTER_MODEL = "register_model"
    PREPARE_CAPTIONS = "prepare_captions"
    PREPARE_DATASET_IMAGE = "prepare_dataset_image"
    ADD_DATASET_IMAGES = "add_dataset_images"


class ReplyTarget(BaseModel):
    """Where a push platform sends the result and edits the status message."""

    chat_id: str
    message_id: int | None = None
    status_message_id: int | None = None
    group_chat: bool = False
    # How long the result may wait for the push platform's delivery worker, in seconds: the
    # jobs client sets it from `Config.delivery_deadline`; None (requests from before it
    # existed) means `workflows.policies.DELIVER_DEADLINE`. After it the job ends done but
    # not delivered, and the result stays retrievable by id.
    deliver_within: float | None = None
    # The forum topic the request came from (Telegram's message_thread_id): every message the
    # job sends there passes it, or it would land in the group's General topic.
    message_thread_id: int | None = None
    # Discord: the guild the channel belongs to (None in DMs). A guild's settings, such as its
    # content filter (`/safety`), are the guild's, not one channel's: store/safety.py keys the
    # policy by it when it is set.
    guild_id: str | None = None


class MakeImageRequest(BaseModel):
    """One /make: the prompt plus what the user changed for this run only."""

    user: str
    platform: str = "cli"
    prompt: str
    template: str | None = None  # None = the user's saved template
    overrides: dict[str, Any] = Field(default_factory=dict)
    source_image_id: str | None = None  # GridFS id of the img2img source
    reply: ReplyTarget | None = None
    request_id: str | None = None  # the platform's own id (update id, button press)
    regen_of: str | None = None  # workflow id of the run this repeats


class LoraFile(BaseModel):
    """A trained LoRA a prompt uses: the comfy worker puts `filename` into its server's loras
    folder (from GridFS, sha256-checked) before it submits the graph."""

    name: str
    filename: str
    blob_id: str
    sha256: str
    size: int = 0
    weight: float = 0.8


class ComfyWork(BaseModel):
    """One ComfyUI prompt to run: a fully injected graph plus files to upload first."""

    graph: dict[str, Any]
    # node id -> GridFS id of an image to upload and set as that LoadImage node's `image`
    uploads: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None
    loras: list[LoraFile] = Field(default_factory=list)
    # The user id the uploads must belong to: the comfy worker reads them owner-checked again
    # (empty in plans made before the check existed: those were checked by prepare only).
    owner_id: str = ""


MediaKind = Literal["upscale", "rmbg", "resize", "convert"]


class MediaRequest(BaseModel):
    """One media job on an image the user sent (stored in GridFS before the job starts)."""

    user: str
    platform: str = "cli"
    kind: MediaKind
    source_image_id: str
    # upscale: scale (2|4); resize: width, height, mode (fit|fill|exact);
    # convert: format (png|jpeg|webp), quality, lossless, background ("#rrggbb")
    params: dict[str, Any] = Field(default_factory=dict)
    reply: ReplyTarget | None = None
    request_id: str | None = None


class MediaWork(BaseModel):
    """One Pillow operation on the `media` queue: source blob in, result blob out."""

    op: str  # resize | convert
    source_id: str
    params: dict[str, Any] = Field(default_factory=dict)


class MediaPrepareInput(BaseModel):
    workflow_id: str
    request: MediaRequest


class ProcessImageInput(BaseModel):
    workflow_id: str
    index: int = 0
    user_id: str
    work: MediaWork


class JobPlan(BaseModel):
    """What prepare decided: the price, the work, and what to tell the user about it."""

    user_id: str
    kind: str
    price: int
    units: int = 1  # images in the batch; refunds are pro rata per unit
    balance: int = 0
    summary: str = ""
    clamps: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    template: str | None = None
    prompt: str | None = None
    seeds: list[int] = Field(default_factory=list)
    comfy: list[ComfyWork] = Field(default_factory=list)
    media: list[MediaWork] = Field(default_factory=list)
    refused: str | None = None  # set instead of raising when the request is unacceptable
    refused_code: str | None = None
    # Queues and timeouts (domain/queues.py); None in plans from before it, which carried them
    # in `settings` (read with `domain.queues.plan_route`).
    route: JobRoute | None = None


class PrepareInput(BaseModel):
    workflow_id: str
    request: MakeImageRequest


class ChargeInput(BaseModel):
    user_id: str
    amount: int
    key: str
    job_id: str
    reason: str = ""
    # Charge only what the job's standing charge (its charges minus its refunds, over every
    # run) lacks of `amount`: a run that an operator reset pays for the job once, whether or
    # not the earlier run's charge was refunded (store/ledger.py `Ledger.charge`).
    top_up: bool = False
    # The saga's settle: the same key again after the work, expected to be applied already (a
    # plain run), so the ledger reads it first instead of opening a transaction. A reset run's
    # settle (a key not applied) takes the transaction as any charge. Workers of an earlier
    # release ignore the field and take the transaction every time.
    settle: bool = False


class ChargeResult(BaseModel):
    ok: bool
    balance: int
    charged: int = 0
    reason: str | None = None  # why not ok (insufficient points)


class RefundInput(BaseModel):
    user_id: str
    amount: int
    key: str
    job_id: str
    reason: str = ""


class RefundResult(BaseModel):
    refunded: int
    balance: int


class ComfyRunInput(BaseModel):
    workflow_id: str
    index: int = 0
    work: ComfyWork
    timeout_seconds: float = 900.0
    # Store the outputs into GridFS in the same activity, for this user (jobs with patch
    # `saga-top-down`: one round trip per image instead of two). None: return the files'
    # places only (older jobs, captioning), for `store_comfy_outputs` on `comfy-io`.
    store_for: str | None = None


class OutputRef(BaseModel):
    """A file ComfyUI wrote, still on the server that ran the prompt."""

    server_url: str
    node_id: str
    filename: str
    subfolder: str = ""
    type: str = "output"


class ComfyRunResult(BaseModel):
    prompt_id: str
    server_url: str
    files: list[OutputRef] = Field(default_factory=list)
    texts: dict[str, list[str]] = Field(default_factory=dict)
    gpu_seconds: float = 0.0
    # The outputs, already in GridFS, when the input asked (`store_for`); None from a comfy
    # worker of an earlier release, which ignores the field: the job then stores them itself.
    stored: list[StoredOutput] | None = None


class StoreOutputsInput(BaseModel):
    workflow_id: str
    index: int = 0
    user_id: str
    files: list[OutputRef]
    seed: int | None = None


class StoredOutput(BaseModel):
    blob_id: str
    seed: int | None = None
    width: int = 0
    height: int = 0
    content_type: str = "image/png"
    # The content filter flagged it and the chat's policy is `blur`: a push platform shows it
    # behind a spoiler (Telegram `has_spoiler`); the stored image is the original.
    spoiler: bool = False


class Progress(BaseModel):
    """What a running activity reported back to its workflow (signal `report_progress`).

    Activities no longer send it (their progress is in their heartbeat details, `RenderBeat`,
    which writes no history); the signal stays accepted for activities of an older release
    during a rolling deploy, and for the replay of histories that have it.
    """

    index: int = 0
    state: JobState = JobState.QUEUED
    queue_position: int | None = None
    percent: float = 0.0
    detail: str = ""


class RenderBeat(BaseModel):
    """Heartbeat details of a `run_comfy_prompt` attempt: where it submitted its prompt (for a
    retry to re-attach) and how far it is (for `status()` to show live progress).

    Progress lives here, not in signals: a heartbeat is no history event (the server keeps only
    the last details, with the pending activity), and the Temporal UI shows them on the pending
    activity. `index` is None in the beats of activities of an older release, which signalled
    their progress instead; `status()` skips those.
    """

    server_url: str
    prompt_id: str
    index: int | None = None
    percent: float = 0.0
    queue_position: int | None = None
    stage: str = "queued"
    detail: str = ""
    # Attempts so far that handed the prompt back to the queue (a stopping worker, a lost
    # model, a busy server at the end of a backlog): not failures, so they do not count
    # against COMFY_MAX_FAILED_ATTEMPTS. Carried from attempt to attempt in these details.
    handed_back: int = 0


# A render is given up after this many failed attempts; hand-backs aside, of which a prompt
# may make up to COMFY_MAX_HAND_BACKS more (the retry policy's maximum is the sum; the
# activity itself stops at the failures, counting from its heartbeat details).
COMFY_MAX_FAILED_ATTEMPTS = 4
COMFY_MAX_HAND_BACKS = 12


class JobStatus(BaseModel):
    """The live view of one job: the query result and, once final, the workflow result."""

    workflow_id: str = ""
    kind: str = "make"
    user: str = ""
    state: JobState = JobState.STARTING
    queue_position: int | None = None
    percent: float = 0.0
    detail: str = ""
    outputs: list[StoredOutput] = Field(default_factory=list)
    price: int = 0
    refund: int = 0
    balance: int | None = None
    reason: str | None = None
    clamps: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    prompt: str | None = None
    template: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    gpu_seconds: float = 0.0
    # Machine-readable reason of a refusal (`insufficient_points`, `bad_input`, ...): the
    # collection cook pauses on `insufficient_points` instead of counting a failed piece.
    refused_code: str | None = None
    # Why a finished job's result (or final message) did not reach its chat: the delivery
    # deadline passed, or the platform refused it for good (`not_delivered`). The job keeps
    # its state and charge; the outputs stay retrievable by id (`stationthis jobs show`).
    not_delivered: str | None = None
    # LoRA training: stage (submitted, captioning, training), step counter, the model made
    stage: str = ""
    step: int = 0
    # Units of work (images) of the job; `status()` weighs each running unit's heartbeat
    # percent by it. Filled by the `status` query only.
    units: int = 0
    total_steps: int = 0
    loss: float | None = None
    model: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        return self.state.final

    def settled(self) -> JobStatus:
        """This status as a final one is shown: no live progress left over.

        Percent, detail and queue position describe a job that runs. A job that got progress
        signals (comfy workers of earlier releases) kept "percent 91.7, detail node 3" in its
        result, and one an operator terminated kept the percent of its last query; once final,
        done reads 100% and every other end 0%, with no detail.
        """
        if not self.final:
            return self
        percent = 100.0 if self.state is JobState.DONE else 0.0
        return self.model_copy(update={"percent": percent, "detail": "", "queue_position": None})

    def headline(self) -> str:
        """One line a user reads: `done`, `failed: <reason>, refunded N`, ..."""
        s = self.state
        if s is JobState.QUEUED and self.queue_position is not None:
            return f"queued (position {self.queue_position})"
        if s is JobState.RUNNING and self.stage == "training" and self.total_steps:
            return f"training {self.percent:.0f}% (step {self.step}/{self.total_steps})"
        if s is JobState.RUNNING and self.stage:
            return f"{self.stage} {self.percent:.0f}%"
        if s is JobState.RUNNING:
            return f"rendering {self.percent:.0f}%"
        if s is JobState.FAILED:
            return f"failed: {self.reason or 'unknown error'}, refunded {self.refund}"
        if s is JobState.CANCELLED:
            return f"cancelled, refunded {self.refund}"
        if s is JobState.REFUSED:
            return f"refused: {self.reason}"
        if s is JobState.DONE and self.not_delivered:
            return f"done, not delivered: {self.not_delivered}"
        return s.value


class CancelRequest(BaseModel):
    reason: str = "cancelled by the user"
    by: str = ""


class CancelResult(BaseModel):
    state: JobState
    refund: int


class JobRecordInput(BaseModel):
    status: JobStatus
    platform: str = "cli"
    user_id: str = ""
    request: dict[str, Any] = Field(default_factory=dict)


class SlotInput(BaseModel):
    user_id: str
    workflow_id: str


class DeliverInput(BaseModel):
    platform: str
    reply: ReplyTarget | None = None
    status: JobStatus


def new_job_id(kind: str, user: str, request_id: str | None = None) -> str:
    """`<kind>-<user>-<request id or short uuid>`: a retried platform request maps to one id."""
    suffix = request_id if request_id else uuid.uuid4().hex[:10]
    return f"{kind}-{id_fragment(user)}-{suffix}"


JOB_REF_LENGTH = 22


def job_ref(workflow_id: str) -> str:
    """A fixed-length reference to a job for places with a byte budget (Telegram's 64-byte
    callback_data): 22 base64url characters of the id's SHA-256 (132 bits, so two ids never
    meet in practice). Workflow ids grow with chat and message ids (`train-telegram-<user>-
    btn-100<chat>.<message>.<hash>`), so buttons carry this instead; the jobs client stores
    each job's ref with its owner when it starts the job and resolves it back."""
    digest = hashlib.sha256(workflow_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:JOB_REF_LENGTH]
