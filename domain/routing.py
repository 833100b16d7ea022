"""Which comfy task queue a job's prompts go to, and whose turn it is: the GPU pool's routing.

Pull-based, model-aware routing: a ComfyUI server's worker polls the base `comfy` queue plus one
queue per checkpoint its server has (`comfy:ckpt:<file>`). A prompt that loads checkpoint X is
scheduled on X's queue, so only a worker whose server has X can take it, and the first free
GPU among those takes it (Temporal matches the next poll, nobody assigns). A prompt that loads
no checkpoint (upscale, rmbg, caption) goes to the base queue, which every server polls.

Capabilities beyond checkpoints: a job may also need node types or model files only some
servers have (an upscale model, RemoveBackground, the caption nodes, the dataset-folder
training nodes). The planner states what the job needs as a list of alternatives (one
`Requirements` per form of the template the job may run as: a training run may use any form
its server can run) and `queue_for_needs` decides: when every live server can run it (its
checkpoint aside) the queue is the checkpoint or base queue as above; otherwise it is a
capability queue `comfy:cap:<hash of the alternatives>`, recorded in MongoDB
(`store/inventory.py` `ComfyInventory.want`), and every comfy worker whose server can run one
of the alternatives polls it (it re-reads the recorded capabilities every few seconds). Still
pull-based: the first free GPU able to run the job takes it.

Fair share: every comfy activity carries the user's id as its Temporal fairness key, and the
server's task-queue fairness (`matching.enableFairness`, workers/config.py `TemporalDev`)
dispatches a backlog round-robin across users instead of in arrival order.

Both land in the plan's typed route (`JobRoute.comfy_queue`, `JobRoute.fairness_key`), which is
in the workflow's history: a plan made before this module existed carries neither, so its
workflow schedules exactly what it did then (base queue, no fairness key) and old histories
replay unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from domain.inventory import Requirements, ServerInventory, requirements_of
from domain.queues import JobRoute

# Node types that load a checkpoint file by name, and the input that names it.
CHECKPOINT_LOADERS: dict[str, str] = {
    "CheckpointLoaderSimple": "ckpt_name",
    "CheckpointLoader": "ckpt_name",
    "ImageOnlyCheckpointLoader": "ckpt_name",
}

CHECKPOINT_QUEUE_MARK = ":ckpt:"
CAPABILITY_QUEUE_MARK = ":cap:"


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


def needs_of(graphs: Iterable[Mapping[str, Any]], fetched: Iterable[str] = ()) -> Requirements:
    """What running every graph of one job needs of one server (the files in `fetched`, a
    user's LoRAs the worker brings, aside)."""
    brought = frozenset(fetched)
    out: Requirements | None = None
    for graph in graphs:
        needs = requirements_of(graph, fetched=brought)
        out = needs if out is None else out.merged(needs)
    return out or Requirements()


def capability_key(alternatives: Sequence[Requirements]) -> str:
    """A short stable name of a set of alternatives (order and repeats do not matter)."""
    canon = sorted({_canonical(a) for a in alternatives})
    return hashlib.sha256(json.dumps(canon).encode()).hexdigest()[:16]


def _canonical(needs: Requirements) -> str:
    return json.dumps(
        {
            "n": sorted(needs.node_types),
            "m": {f: sorted(v) for f, v in sorted(needs.models.items()) if v},
            "g": {c: sorted(v) for c, v in sorted(needs.given.items())},
        },
        sort_keys=True,
    )


def capability_queue(base: str, alternatives: Sequence[Requirements]) -> str:
    """The task queue of the servers that can run one of `alternatives`."""
    return f"{base}{CAPABILITY_QUEUE_MARK}{capability_key(alternatives)}"


def without_checkpoints(needs: Requirements) -> Requirements:
    """`needs` less its checkpoint files (which the checkpoint queues already route by)."""
    models = {f: v for f, v in needs.models.items() if f != "checkpoints"}
    return needs.model_copy(update={"models": models})


def able_to_run(server: ServerInventory, alternatives: Sequence[Requirements]) -> bool:
    """Whether `server` can run one of `alternatives`."""
    return any(server.can_run(a) for a in alternatives)


def queue_for_needs(
    base: str,
    alternatives: Sequence[Requirements],
    servers: Sequence[ServerInventory],
    graphs: Iterable[Mapping[str, Any]] = (),
) -> str:
    """The queue of a job needing one of `alternatives`, given the live `servers`.

    Every server can run it, its checkpoint aside: the checkpoint queue of `graphs` (or the
    base queue), exactly as before capabilities were routed. Otherwise (or when `graphs` name
    no checkpoint and some server lacks one the alternatives load) the capability queue, which
    only the able servers poll. With no server known nothing is decided here: the job goes
    where `graphs` send it (prepare already refused what no known server can run).
    """
    legacy = queue_for_graphs(base, graphs)
    if not servers or not alternatives:
        return legacy
    stripped = [without_checkpoints(a) for a in alternatives]
    if all(able_to_run(s, stripped) for s in servers) and (
        legacy != base or all(able_to_run(s, alternatives) for s in servers)
    ):
        return legacy
    return capability_queue(base, alternatives)


def comfy_route(
    route: JobRoute,
    graphs: Iterable[Mapping[str, Any]],
    user_id: str,
    queue: str | None = None,
) -> JobRoute:
    """`route` with its job's GPU queue (`queue`, decided by the planner from the inventory;
    by default by the checkpoint its prompts load) and its fairness key (the user), from the
    base queue `route` names."""
    return route.model_copy(
        update={
            "comfy_queue": queue or queue_for_graphs(route.comfy_queue, graphs),
            "fairness_key": user_id[:64],  # Temporal's limit for a fairness key
        }
    )
