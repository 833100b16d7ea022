"""The HTTP API, `/v1/...`: jobs, outputs, uploads, the account and quotes, for an API key.

Every route is a thin wrapper over the jobs client: it authenticates the key, rate-limits it,
and calls the same service methods the bot and the CLI call, passing the key's identity as
`user`, so the ownership checks are the services' own (another user's job or output is "no
job"/"no output", exactly like a missing one). Errors are problem documents (problems.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.webhooks import check_url
from adapters.jobs import JobsClient, StartedJob
from adapters.telegram.ratelimit import RateLimiter
from adapters.web.problems import Problem
from domain.identity import parse_identity
from domain.jobs import JobState, JobStatus, MakeImageRequest, MediaRequest
from domain.training import TrainingParams, TrainRequest
from domain.webhooks import WebhookWorkflowInput
from media.safety import DEFAULT_LIMITS
from store.api_keys import ApiKey, IdempotencyRecord

router = APIRouter(prefix="/v1")

JobKindName = Literal["make", "upscale", "rmbg", "resize", "convert", "train", "cook"]
UPLOAD_CHUNK = 64 * 1024
# Jobs read per identity to cut a page from (newest first): pages reach this far back.
LIST_SCAN = 1000


# ---- models --------------------------------------------------------------------------------


class JobCreate(BaseModel):
    """A job to start. `make`: prompt (+ template, overrides, source_image_id); media kinds:
    source_image_id (an upload's id) + params; `train`: dataset (+ params, model_name);
    `cook`: collection (+ in_flight)."""

    kind: JobKindName
    prompt: str = ""
    template: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    source_image_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    dataset: str | None = None
    model_name: str | None = None
    collection: str | None = None
    in_flight: int = 3
    # Where each state change is POSTed, signed (README "Webhooks"); public http(s) only.
    webhook_url: str | None = Field(default=None, max_length=2000)


class OutputView(BaseModel):
    id: str
    url: str
    content_type: str
    width: int = 0
    height: int = 0
    seed: int | None = None


class JobView(BaseModel):
    """What `GET /v1/jobs/{id}` shows: the job's live state."""

    id: str
    kind: str
    state: str
    final: bool
    stage: str = ""
    queue_position: int | None = None
    percent: float = 0.0
    detail: str = ""
    price: int = 0
    refund: int = 0
    reason: str | None = None
    outputs: list[OutputView] = Field(default_factory=list)
    existing: bool = False


class JobRow(BaseModel):
    id: str
    kind: str
    state: str
    started: str


class JobPage(BaseModel):
    jobs: list[JobRow]
    next_cursor: str | None = None


class Upload(BaseModel):
    id: str


class Me(BaseModel):
    identity: str
    user_id: str
    identities: list[str]
    balance: int
    limits: dict[str, Any]
    settings: dict[str, Any]


class Quote(BaseModel):
    kind: str
    price: int
    balance: int
    clamps: list[str] = Field(default_factory=list)
    summary: str = ""


def job_view(status: JobStatus, *, existing: bool = False) -> JobView:
    return JobView(
        id=status.workflow_id,
        kind=status.kind,
        state=status.state.value,
        final=status.final,
        stage=status.stage,
        queue_position=status.queue_position,
        percent=status.percent,
        detail=status.detail,
        price=status.price,
        refund=status.refund,
        reason=status.reason,
        outputs=[
            OutputView(
                id=o.blob_id,
                url=f"/v1/outputs/{o.blob_id}",
                content_type=o.content_type,
                width=o.width,
                height=o.height,
                seed=o.seed,
            )
            for o in status.outputs
        ],
        existing=existing,
    )


# ---- dependencies --------------------------------------------------------------------------


def jobs_of(request: Request) -> JobsClient:
    jobs: JobsClient = request.app.state.jobs
    return jobs


async def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> ApiKey:
    """The API key of the request (`Authorization: Bearer st_...`), checked on every request
    (a revoked key stops at its next request), then its rate limit (429 with Retry-After)."""
    jobs = jobs_of(request)
    scheme, _, token = (authorization or "").partition(" ")
    key = None
    if scheme.lower() == "bearer" and token:
        key = await asyncio.to_thread(jobs.stores.api_keys.verify, token.strip())
    if key is None:
        raise Problem(
            401,
            "unauthorized",
            "a valid API key is needed: Authorization: Bearer st_...",
            headers={"WWW-Authenticate": "Bearer"},
        )
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.check(key.key_id)
    if wait > 0:
        raise Problem(
            429,
            "rate_limited",
            f"too many requests: try again in {wait:.0f} s",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    return key


Jobs = Annotated[JobsClient, Depends(jobs_of)]
Caller = Annotated[ApiKey, Depends(caller)]


# ---- jobs ----------------------------------------------------------------------------------


def _body_hash(body: JobCreate) -> str:
    return hashlib.sha256(
        json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()


async def _idempotency(
    jobs: JobsClient, key: ApiKey, idem: str, body: JobCreate
) -> IdempotencyRecord:
    """The Idempotency-Key's record: the request id the job is started with (so the same key
    starts or finds the same workflow) and its job once started; another body is refused."""
    if not 1 <= len(idem) <= 255:
        raise Problem(422, "bad_idempotency_key", "Idempotency-Key must be 1-255 characters")
    wanted = _body_hash(body)
    rid = "api" + hashlib.sha256(f"{key.identity}\n{idem}".encode()).hexdigest()[:20]
    record = await asyncio.to_thread(
        jobs.stores.api_keys.claim_idempotency, key.identity, idem, wanted, rid
    )
    if record.body != wanted:
        raise Problem(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body",
        )
    return record


async def _start(jobs: JobsClient, key: ApiKey, body: JobCreate, rid: str | None) -> StartedJob:
    user = key.identity
    platform, _ = parse_identity(user)
    platform = "web" if platform == "telegram" else platform  # pulled, never pushed to a chat
    if body.kind == "make":
        return await jobs.start_make(
            MakeImageRequest(
                user=user,
                platform=platform,
                prompt=body.prompt,
                template=body.template,
                overrides=body.overrides,
                source_image_id=body.source_image_id,
                request_id=rid,
            )
        )
    if body.kind == "train":
        if not body.dataset:
            raise Problem(422, "bad_input", "dataset: a training job needs a dataset")
        return await jobs.start_train(
            TrainRequest(
                user=user,
                platform=platform,
                dataset=body.dataset,
                params=TrainingParams.model_validate(body.params),
                model_name=body.model_name,
                request_id=rid,
            )
        )
    if body.kind == "cook":
        if not body.collection:
            raise Problem(422, "bad_input", "collection: a cook needs a collection id")
        return await jobs.start_cook(
            body.collection, user, platform=platform, in_flight=body.in_flight
        )
    if not body.source_image_id:
        raise Problem(422, "bad_input", f"source_image_id: {body.kind} needs an upload's id")
    return await jobs.start_media(
        MediaRequest(
            user=user,
            platform=platform,
            kind=body.kind,
            source_image_id=body.source_image_id,
            params=body.params,
            request_id=rid,
        )
    )


@router.post("/jobs", status_code=201, response_model=JobView)
async def create_job(
    body: JobCreate,
    jobs: Jobs,
    key: Caller,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JobView:
    """Start a job. With `Idempotency-Key`, the same key and body give the same job (a retry
    after a lost answer starts nothing new); the same key with another body is a 422."""
    record = None
    if idempotency_key is not None:
        record = await _idempotency(jobs, key, idempotency_key, body)
        if record.job_id is not None:  # a replay: the job its first request started
            status = await jobs.status(record.job_id, user=key.identity)
            return job_view(status, existing=True)
    rid = record.request_id if record is not None else None
    config = jobs.config
    if body.webhook_url:  # refused before anything is started
        await check_url(body.webhook_url, allow_loopback=config.webhook_allow_loopback)
    started = await _start(jobs, key, body, rid)
    if body.webhook_url:
        await _start_webhook(jobs, key, started.workflow_id, body.webhook_url)
    if idempotency_key is not None:
        await asyncio.to_thread(
            jobs.stores.api_keys.record_idempotent_job,
            key.identity,
            idempotency_key,
            started.workflow_id,
        )
    status = await jobs.status(started.workflow_id, user=key.identity)
    return job_view(status, existing=started.existing)


async def _start_webhook(jobs: JobsClient, key: ApiKey, job_id: str, url: str) -> None:
    """Start the job's webhook deliveries (once per job: a replayed request finds them)."""
    owner = await jobs.user(key.identity)
    with contextlib.suppress(WorkflowAlreadyStartedError):  # sent already: its job has ended
        await jobs.temporal.start_workflow(
            "JobWebhooksWorkflow",
            WebhookWorkflowInput(
                job_id=job_id,
                url=url,
                user_id=owner.id,
                identity=key.identity,
                queue=jobs.config.task_queues.deliver("webhook"),
                deadline=jobs.config.webhook_deadline,
            ),
            id=f"webhook-{job_id}",
            task_queue=jobs.config.task_queues.deliver("webhook"),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, jobs: Jobs, key: Caller) -> JobView:
    """State, stage, queue position, percent, price, refund and outputs of one job."""
    return job_view(await jobs.status(job_id, user=key.identity))


def _cursor(started: str, wid: str) -> str:
    return base64.urlsafe_b64encode(f"{started}\n{wid}".encode()).decode()


def _after(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    started, sep, wid = raw.partition("\n")
    if not sep or not started or not wid:
        raise Problem(422, "bad_cursor", "cursor: not a cursor this API gave")
    return started, wid


@router.get("/jobs", response_model=JobPage)
async def list_jobs(
    jobs: Jobs,
    key: Caller,
    state: JobState | None = None,
    kind: JobKindName | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobPage:
    """The caller's jobs, newest first, `limit` a page; `next_cursor` fetches the next page."""
    after = _after(cursor) if cursor else None
    # The account's jobs from every linked identity (a job started on Telegram shows here):
    # the jobs client's list covers all the identities of the caller's account.
    rows = await jobs.list_jobs(
        user=key.identity, state=state.value if state else None, limit=LIST_SCAN
    )
    rows.sort(key=lambda r: (r.started, r.workflow_id), reverse=True)
    picked: list[JobRow] = []
    more = False
    for r in rows:
        if kind and r.kind != kind:
            continue
        if after is not None and (r.started, r.workflow_id) >= after:
            continue
        if len(picked) == limit:
            more = True
            break
        picked.append(JobRow(id=r.workflow_id, kind=r.kind, state=r.state, started=r.started))
    nxt = _cursor(picked[-1].started, picked[-1].id) if more and picked else None
    return JobPage(jobs=picked, next_cursor=nxt)


@router.post("/jobs/{job_id}/cancel", response_model=JobView)
async def cancel_job(job_id: str, jobs: Jobs, key: Caller) -> JobView:
    """Cancel with refund; 409 with the reason when it can no longer be cancelled."""
    await jobs.cancel(job_id, user=key.identity)
    return job_view(await jobs.status(job_id, user=key.identity))


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, jobs: Jobs, key: Caller) -> StreamingResponse:
    """Server-sent events: one `status` event each time the job changes, the last one final."""
    await jobs.status(job_id, user=key.identity)  # 404 before the stream opens

    async def events() -> AsyncIterator[bytes]:
        n = 0
        async for status in jobs.watch(job_id, user=key.identity, interval=0.5):
            n += 1
            data = job_view(status).model_dump_json()
            yield f"id: {n}\nevent: status\ndata: {data}\n\n".encode()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# ---- outputs and uploads -------------------------------------------------------------------


@router.get("/outputs/{output_id}")
async def get_output(output_id: str, jobs: Jobs, key: Caller) -> StreamingResponse:
    """An output image streamed from GridFS; another user's id is a 404 like a missing one.
    Outputs never change, so they may be cached (privately) for good."""
    owner = await jobs.user(key.identity)
    info, stream = await asyncio.to_thread(jobs.stores.blobs.open_owned, output_id, owner.id)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(stream.read, UPLOAD_CHUNK):
                yield chunk
        finally:
            stream.close()

    return StreamingResponse(
        chunks(),
        media_type=info.content_type or "application/octet-stream",
        headers={
            "Cache-Control": "private, max-age=31536000, immutable",
            "ETag": f'"{output_id}"',
            "Content-Length": str(info.length),
        },
    )


@router.post("/uploads", status_code=201, response_model=Upload)
async def upload(file: UploadFile, jobs: Jobs, key: Caller, request: Request) -> Upload:
    """Store an image for a media job: size limits before anything is read into the store,
    then the checks of media/safety.py; returns the id to pass as `source_image_id`."""
    limit = DEFAULT_LIMITS.max_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise Problem(413, "too_large", f"the upload is larger than {limit // 2**20} MB")
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, "too_large", f"the upload is larger than {limit // 2**20} MB")
    blob_id = await jobs.store_source(key.identity, data, file.filename or "upload")
    return Upload(id=blob_id)


# ---- account -------------------------------------------------------------------------------


@router.get("/me", response_model=Me)
async def me(jobs: Jobs, key: Caller) -> Me:
    """Balance, limits and settings of the key's account."""
    user = await jobs.user(key.identity)
    balance, _ = await jobs.balance_summary(key.identity, 0)
    limits = await jobs.limits(key.identity)
    settings = await jobs.settings(key.identity)
    return Me(
        identity=key.identity,
        user_id=user.id,
        identities=list(user.identities),
        balance=balance,
        limits=limits.model_dump(),
        settings=settings.model_dump(),
    )


@router.patch("/me/settings")
async def patch_settings(updates: dict[str, Any], jobs: Jobs, key: Caller) -> dict[str, Any]:
    """Change saved settings: all of them or none (a 422 names each bad field)."""
    saved = await jobs.update_settings(key.identity, updates)
    return saved.model_dump()


@router.get("/quote", response_model=Quote)
async def quote(
    jobs: Jobs,
    key: Caller,
    prompt: str,
    template: str | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    batch: int | None = None,
) -> Quote:
    """The price of a `make` before starting it (the same checks, nothing written)."""
    overrides = {
        k: v
        for k, v in {"width": width, "height": height, "steps": steps, "batch": batch}.items()
        if v is not None
    }
    plan = await jobs.quote_make(
        MakeImageRequest(user=key.identity, prompt=prompt, template=template, overrides=overrides)
    )
    return Quote(
        kind=plan.kind,
        price=plan.price,
        balance=plan.balance,
        clamps=plan.clamps,
        summary=plan.summary,
    )


class WebhookSecret(BaseModel):
    secret: str


@router.get("/me/webhook-secret", response_model=WebhookSecret)
async def webhook_secret(jobs: Jobs, key: Caller) -> WebhookSecret:
    """The account's webhook signing secret (made on first use), to verify our events."""
    owner = await jobs.user(key.identity)
    secret = await asyncio.to_thread(jobs.stores.webhook_secrets.secret, owner.id)
    return WebhookSecret(secret=secret)


@router.post("/me/webhook-secret/rotate", response_model=WebhookSecret)
async def rotate_webhook_secret(jobs: Jobs, key: Caller) -> WebhookSecret:
    """A new signing secret; events sent from now on are signed with it."""
    owner = await jobs.user(key.identity)
    secret = await asyncio.to_thread(jobs.stores.webhook_secrets.rotate, owner.id)
    return WebhookSecret(secret=secret)
