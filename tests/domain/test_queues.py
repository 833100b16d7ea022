"""One typed routing model: a job's queues and timeouts come from the config, through its plan."""

from __future__ import annotations

from domain.queues import JobRoute, TaskQueues, plan_route
from domain.search_attributes import SEARCH_ATTRIBUTES
from workers.config import DEFAULT_SEARCH_ATTRIBUTES, Config


def test_the_plan_route_comes_from_the_configured_queues_and_timeouts() -> None:
    config = Config(
        task_queues=TaskQueues(comfy="gpu-a", comfy_io="gpu-a-io", media="pillow"),
        render_timeout=120,
        comfy_heartbeat_timeout=7,
        training_chunk_timeout=600,
    )
    route = config.routing().route("telegram")
    assert route == JobRoute(
        comfy_queue="gpu-a",
        comfy_io_queue="gpu-a-io",
        media_queue="pillow",
        deliver_queue="deliver-telegram",
        render_timeout=120,
        heartbeat_timeout=7,
        chunk_timeout=600,
    )
    assert route.deliver_to("telegram") == "deliver-telegram"


def test_a_typed_route_wins_over_the_untyped_settings_of_older_plans() -> None:
    typed = JobRoute(comfy_queue="gpu-b", render_timeout=60)
    assert plan_route(typed, {"comfy_queue": "comfy", "render_timeout": 900}) is typed


def test_a_plan_from_before_the_route_keeps_the_queues_it_carried_in_settings() -> None:
    old = plan_route(
        None,
        {
            "comfy_queue": "gpu-c",
            "comfy_io_queue": "gpu-c-io",
            "render_timeout": 300,
            "chunk_timeout": 120,
            "steps": 20,
        },
    )
    assert (old.comfy_queue, old.comfy_io_queue, old.media_queue) == ("gpu-c", "gpu-c-io", "media")
    assert (old.render_timeout, old.heartbeat_timeout, old.chunk_timeout) == (300, 30, 120)
    # No delivery queue in an old plan: the platform's, as the workflow always derived it.
    assert old.deliver_to("telegram") == "deliver-telegram"
    bare = plan_route(None, {})
    assert (bare.comfy_queue, bare.comfy_io_queue, bare.render_timeout) == (
        "comfy",
        "comfy-io",
        900,
    )


def test_the_search_attributes_the_stack_registers_are_the_keys_the_code_sets() -> None:
    assert DEFAULT_SEARCH_ATTRIBUTES == SEARCH_ATTRIBUTES
    assert set(SEARCH_ATTRIBUTES) == {"UserId", "Platform", "JobKind", "JobState", "ParentJob"}
    assert set(SEARCH_ATTRIBUTES.values()) == {"Keyword"}
