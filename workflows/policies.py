"""Timeouts and retry policies, one per activity, chosen for what each activity does.

- prepare_* (stationthis): start-to-close 30 s; 5 attempts; bad input never retried.
- charge_points (stationthis): start-to-close 15 s; retried forever (idempotent by key);
  too few points is an answer, not an error.
- refund_points (stationthis): start-to-close 15 s; retried forever: a refund is never forgotten.
- run_comfy_prompt (comfy): start-to-close = the job's render budget, heartbeat 30 s;
  4 failed attempts; validation, execution and interrupt errors never retried. A hand-back
  is retried after 0.1 s on another worker and does not count as a failed attempt (up to 12
  of them) (`ComfyHandedBack`: a stopping
  worker gives back a fed-ahead prompt that has not started; `ComfyModelMissing`: the server
  lost a checkpoint the graph loads; activities/comfy.py).
- process_image (media): start-to-close 2 min; 3 attempts; bad images never retried.
- store_comfy_outputs (comfy-io): start-to-close 2 min; 10 attempts.
- check_outputs (safety): start-to-close 2 min, schedule-to-close 15 min, then fail closed.
- record_job, release_job_slot (stationthis): start-to-close 15 s; retried forever (upserts).
- deliver_result (deliver-<platform>): start-to-close 2 min, heartbeat 20 s (a bot killed
  mid-send is noticed in seconds), schedule-to-close = the request's `reply.deliver_within`
  (`Config.delivery_deadline`, default 1 h), retried within that: a bot that is down
  receives the result when it is back within the hour; after it the job ends done but not
  delivered (its slot was freed before delivery, its result stays retrievable by id).
  `not_delivered` and `undeliverable` (the platform refused for good) are never retried.

"Forever" means no maximum attempts with the interval capped, because each of those activities is
idempotent by key and a stuck one shows up in the Web UI as a pending activity with its last
error, which is where an operator looks.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from domain.jobs import COMFY_MAX_FAILED_ATTEMPTS, COMFY_MAX_HAND_BACKS

# Error types (ApplicationError.type) that retrying cannot fix.
USER_INPUT_ERRORS = [
    "bad_input",
    "invalid_settings",
    "invalid_prompt",
    "unknown_user",
    "unknown_template",
    "invalid_template",
    "invalid_identity",
    "insufficient_points",
]
COMFY_PERMANENT_ERRORS = [
    "ComfyValidationError",
    "ComfyMissingNode",
    "ComfyExecutionError",
    "ComfyInterrupted",
]

PREPARE_TIMEOUT = timedelta(seconds=30)
PREPARE_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=USER_INPUT_ERRORS,
)

LEDGER_TIMEOUT = timedelta(seconds=15)
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=["insufficient_points"],
)

COMFY_HEARTBEAT = timedelta(seconds=30)
# 4 failed attempts, plus up to 12 hand-backs, which are no failure: the activity gives up
# itself (non-retryable `ComfyGaveUp`) once its failures, hand-backs aside, reach 4.
COMFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=COMFY_MAX_FAILED_ATTEMPTS + COMFY_MAX_HAND_BACKS,
    non_retryable_error_types=COMFY_PERMANENT_ERRORS,
)

STORE_TIMEOUT = timedelta(minutes=2)
STORE_RETRY = RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=20))

DELIVER_TIMEOUT = timedelta(minutes=2)
DELIVER_HEARTBEAT = timedelta(seconds=20)  # a bot killed mid-send is noticed in seconds
DELIVER_DEADLINE = timedelta(hours=1)  # when the request does not say (Config default too)
DELIVER_DEADLINE_UNBOUNDED = timedelta(days=7)  # histories from before `bounded-delivery`
DELIVER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
    non_retryable_error_types=["undeliverable", "not_delivered"],
)

MEDIA_TIMEOUT = timedelta(minutes=2)
MEDIA_RETRY = RetryPolicy(
    maximum_attempts=3,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[*USER_INPUT_ERRORS, "bad_image"],
)

# check_outputs (safety): one image takes ~0.1-0.3 s on a CPU core (bench/safety.py), a batch
# a few seconds. A safety worker that is down holds the job until SAFETY_DEADLINE; then the job
# fails closed: its images are withheld and refunded, never shown unchecked.
SAFETY_TIMEOUT = timedelta(minutes=2)
SAFETY_DEADLINE = timedelta(minutes=15)
SAFETY_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
