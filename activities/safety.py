"""`check_outputs`: the output classifier's activity, on its own `safety` queue.

It runs on `stationthis safety-worker`, a CPU process apart from the GPU slot (a ComfyUI prompt
is never held while an image is classified) and apart from the workflow worker (an ONNX run of
~100 ms per image would stall its thread pool). Each image is read from GridFS by id (no image
travels in a Temporal payload), scored, decided by the job's policy and recorded in the audit
trail before the answer goes back; a retry records the same decision under the same key.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity

from domain.jobs import ActivityNames
from domain.safety import CheckOutputsInput, CheckOutputsResult, Verdict, decide
from media.classifier import Classifier
from store.db import Stores

log = logging.getLogger(__name__)


class SafetyActivities:
    def __init__(self, stores: Stores, classifier: Classifier) -> None:
        self.stores = stores
        self.classifier = classifier  # the seam: tests pass FixedClassifier / MarkerClassifier

    def all(self) -> list[Any]:
        return [self.check_outputs]

    @activity.defn(name=ActivityNames.CHECK_OUTPUTS)
    def check_outputs(self, inp: CheckOutputsInput) -> CheckOutputsResult:
        """Score every output of a job and say what its policy makes of each."""
        verdicts: list[Verdict] = []
        for out in inp.outputs:
            data = self.stores.blobs.get(out.blob_id)
            score, label = self.classifier.classify(data)
            verdict = Verdict(
                blob_id=out.blob_id,
                score=score,
                label=label,
                action=decide(inp.policy, score, inp.threshold),
            )
            self.stores.safety.record(
                inp.workflow_id, inp.user_id, inp.policy, inp.threshold, verdict
            )
            verdicts.append(verdict)
            log.info(
                "safety %s %s: score %.3f (%s) under %s -> %s",
                inp.workflow_id,
                out.blob_id,
                score,
                label or "-",
                inp.policy.value,
                verdict.action.value,
            )
        return CheckOutputsResult(verdicts=verdicts)
