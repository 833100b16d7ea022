"""Job history: one record per workflow, newest first, for /regen and /again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.users import JobRecord
from store.db import Stores

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def job(i: int, user: str = "u1", **kw: object) -> JobRecord:
    fields: dict[str, object] = {
        "workflow_id": f"make-telegram-5472638766-{i}",
        "user_id": user,
        "identity": "telegram:5472638766",
        "kind": "make",
        "prompt": f"a cat {i}",
        "template": "make",
        "settings": {"width": 1024, "steps": 30},
        "seeds": [1000 + i],
        "price": 35,
        "state": "running",
        "created_at": T0 + timedelta(minutes=i),
    }
    fields.update(kw)
    return JobRecord.model_validate(fields)


def test_recording_a_job_twice_keeps_one_record_and_its_first_start_time(stores: Stores) -> None:
    stores.jobs.record(job(1))
    later = T0 + timedelta(hours=5)
    done = job(1, state="done", outputs=["abc"], created_at=later, finished_at=later)
    stored = stores.jobs.record(done)
    assert stores.db["jobs"].count_documents({}) == 1
    assert stored.state == "done" and stored.outputs == ["abc"]
    assert stored.created_at == T0 + timedelta(minutes=1)
    assert stored.finished_at == later
    assert stores.jobs.get(done.workflow_id) == stored
    assert stores.jobs.get("nope") is None


def test_the_last_five_runs_are_the_users_newest(stores: Stores) -> None:
    for i in range(8):
        stores.jobs.record(job(i))
    stores.jobs.record(job(99, user="u2"))
    runs = stores.jobs.last_runs("u1")
    assert [r.seeds[0] for r in runs] == [1007, 1006, 1005, 1004, 1003]
    assert stores.jobs.last_runs("u1", 2, states=["failed"]) == []
