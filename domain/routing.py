"""Which comfy task queue a job's prompts go to, and whose turn it is: the GPU pool's routing.

Pull-based, model-aware routing: a ComfyUI server's worker polls the base `comfy` queue plus one
queue per checkpoint its server has (`comfy:ckpt:<file>`). A prompt that loads checkpoint X is
scheduled on X's queue, so only a worker whose server has X can take it, and the first free
GPU among those takes it (Temporal matches the next poll, nobody assigns). A prompt that loads
no checkpoint (upscale, rmbg, caption) goes to the base queue, which every server polls.

Fair share: every comfy activity carries the user's id as its Temporal fairness key, and the
server's task-queue fairness (`matching.enableFairness`, workers/config.py `TemporalDev`)
dispatches a backlog round-robin across users instead of in arrival order.

Both land in the plan's typed route (`JobRoute.comfy_queue`, `JobRoute.fairness_key`), which is
in the workflow's history: a plan made before this module existed carries neither, so its
workflow schedules exactly what it did then (base queue, no fairness key) and old histories
replay unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from domain.queues import JobRoute

# Node types that load a checkpoint file by name, and the input that names it.
CHECKPOINT_LOADERS: dict[str, str] = {
    "CheckpointLoaderSimple": "ckpt_name",
    "CheckpointLoader": "ckpt_name",
    "ImageOnlyCheckpointLoader": "ckpt_name",
}

CHECKPOINT_QUEUE_MARK = ":ckpt:"


def checkpoints_needed(graph: Mapping[str, Any]) -> list[str]:
    """The checkpoint files a ComfyUI graph loads, in node order, without repeats."""
    found: list[str] = []
    for node in graph.values():
        if not isinstance(node, Mapping):
            continue
        field = CHECKPOINT_LOADERS.get(str(node.get("class_type", "")))
        if field is None:
            continue
        name = (node.get("inputs") or {}).get(field)
        if isinstance(name, str) and name and name not in found:
            found.append(name)
    return found


def checkpoint_queue(base: str, checkpoint: str) -> str:
    """The task queue of the servers that have `checkpoint` (its file name, as ComfyUI lists it)."""
    return f"{base}{CHECKPOINT_QUEUE_MARK}{checkpoint}"


def queue_for_graphs(base: str, graphs: Iterable[Mapping[str, Any]]) -> str:
    """The queue every prompt of one job goes to: that of the first checkpoint they load, or
    `base` when they load none. A graph loading two checkpoints is routed by the first (no
    bundled template does; a server without the second refuses it at validation)."""
    for graph in graphs:
        needed = checkpoints_needed(graph)
        if needed:
            return checkpoint_queue(base, needed[0])
    return base


def comfy_route(route: JobRoute, graphs: Iterable[Mapping[str, Any]], user_id: str) -> JobRoute:
    """`route` with its job's GPU queue (by the checkpoint its prompts load) and its fairness key
    (the user), from the base queue `route` names."""
    return route.model_copy(
        update={
            "comfy_queue": queue_for_graphs(route.comfy_queue, graphs),
            "fairness_key": user_id[:64],  # Temporal's limit for a fairness key
        }
    )
