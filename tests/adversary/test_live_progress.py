"""`with_live_progress`: how `status()` folds the pending activities' heartbeat details into the
`status` query's answer (progress is no longer signalled, so it writes no history)."""

from __future__ import annotations

from adapters.jobs import with_live_progress
from domain.jobs import JobState, JobStatus, RenderBeat
from domain.training import ChunkBeat


def beat(index: int | None, stage: str, percent: float = 0.0, **kw: object) -> RenderBeat:
    return RenderBeat(
        server_url="http://gpu", prompt_id=f"p{index}", index=index, stage=stage, percent=percent,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_render_that_left_the_queue_makes_a_queued_job_running_with_its_percent() -> None:
    status = JobStatus(state=JobState.QUEUED, units=1)
    shown = with_live_progress(status, [beat(0, "running", 40.0, detail="node 3")], [])
    assert (shown.state, shown.percent, shown.queue_position, shown.detail) == (
        JobState.RUNNING,
        40.0,
        None,
        "node 3",
    )
    assert status.state is JobState.QUEUED, "the query's answer is not changed in place"


def test_a_waiting_render_shows_its_queue_position_and_stays_queued() -> None:
    shown = with_live_progress(
        JobStatus(state=JobState.QUEUED, units=2),
        [beat(0, "queued", queue_position=3), beat(1, "queued", queue_position=4)],
        [],
    )
    assert (shown.state, shown.queue_position, shown.percent) == (JobState.QUEUED, 3, 0.0)


def test_units_made_and_running_units_add_up_weighed_by_the_units() -> None:
    # 6 images: 2 made (the query counts 2 × 100 / 6), one at 60 %, one waiting behind it.
    status = JobStatus(state=JobState.RUNNING, units=6, percent=33.3)
    shown = with_live_progress(
        status, [beat(2, "running", 60.0), beat(3, "queued", queue_position=1)], []
    )
    assert shown.percent == 43.3
    assert shown.queue_position is None, "a unit renders: the job is not waiting"


def test_beats_of_an_older_release_are_left_to_its_signals() -> None:
    status = JobStatus(state=JobState.QUEUED, units=1, queue_position=2)
    assert with_live_progress(status, [beat(None, "running", 80.0)], []) == status


def test_a_training_chunk_shows_its_step_and_never_goes_back() -> None:
    status = JobStatus(state=JobState.RUNNING, stage="training", step=300, total_steps=1000)
    chunk = ChunkBeat(server_url="http://gpu", prompt_id="c", step=420, total_steps=1000)
    shown = with_live_progress(status, [], [chunk])
    assert (shown.step, shown.total_steps, shown.percent) == (420, 1000, 42.0)
    stale = chunk.model_copy(update={"step": 250})
    assert with_live_progress(status, [], [stale]) == status
    older = chunk.model_copy(update={"total_steps": 0})  # an older release signals its steps
    assert with_live_progress(status, [], [older]) == status
