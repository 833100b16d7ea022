"""The running-job slot a workflow holds, given back in one place.

A user may run `max_running_jobs` jobs at once. The slot is taken outside any workflow, by
the jobs client before it starts one (`JobsClient._take_slot`): a user at the cap is refused
at once, with no workflow, no history and nothing to compensate. From then on the workflow
holds it under its own id, and `HeldSlot.release` gives it back, once, whichever step of the
saga or the cook ends the hold first (the resource_pool sample's client owns both ends of its
lock the same way). A workflow that is terminated cannot give it back; the jobs client frees
the slots of ended workflows when the user next hits the cap.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.jobs import ActivityNames, SlotInput

# Workflow modules are imported inside the sandbox (workflows/registry.py says why).
from workflows import policies


class HeldSlot:
    """The user's running-job slot this workflow holds (taken by the jobs client at start)."""

    def __init__(self) -> None:
        self._user_id = ""
        self._local = False

    def hold(self, user_id: str, *, local: bool) -> None:
        """Note the slot as held for `user_id`; `local` releases it with a local activity (the
        saga: a MongoDB upsert in the workflow task) or else a regular one (the cook, whose
        concurrent pieces need their steps in history order)."""
        self._user_id, self._local = user_id, local

    @property
    def held(self) -> bool:
        return bool(self._user_id)

    async def release(self) -> None:
        """Give the slot back; a no-op when none is held or it was already given back."""
        if not self._user_id:
            return
        user_id, self._user_id = self._user_id, ""
        inp = SlotInput(user_id=user_id, workflow_id=workflow.info().workflow_id)
        if self._local:
            await workflow.execute_local_activity(
                ActivityNames.RELEASE_JOB_SLOT,
                inp,
                start_to_close_timeout=policies.LEDGER_TIMEOUT,
                retry_policy=policies.LEDGER_RETRY,
            )
        else:
            await workflow.execute_activity(
                ActivityNames.RELEASE_JOB_SLOT,
                inp,
                start_to_close_timeout=policies.LEDGER_TIMEOUT,
                retry_policy=policies.LEDGER_RETRY,
            )
