"""Existing users keep every point (issue 18 item 1, "migrate without losing a point").

The user document's shape did not change with the web page: `identities` (a list, unique
multikey index), `points`, `settings`, `created_at` were already today's shape, and API keys,
web sessions and webhook secrets are new collections with no earlier data. So no migration
step: a user written in the previous shape (one `telegram:` identity, no `web:` one, no keys)
signs in with a code and finds the same balance, ledger, settings and jobs; this test proves it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from bson import ObjectId

from adapters.jobs import JobsClient
from domain.jobs import JobState, MakeImageRequest
from tests.web.conftest import Browser

pytestmark = pytest.mark.stack


async def test_a_user_of_the_previous_shape_signs_in_and_keeps_balance_and_history(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    who = f"telegram:{uuid.uuid4().int % 10**9 + 10**9}"
    user_id = str(ObjectId())
    # The document as the bot wrote it before this session's work: no web identity, no keys.
    await asyncio.to_thread(
        jobs.stores.users.coll.insert_one,
        {
            "_id": user_id,
            "identities": [who],
            "points": 0,
            "settings": {"steps": 7},
            "created_at": datetime(2026, 11, 1, tzinfo=UTC),
        },
    )
    await jobs.grant(who, 777, by="test", key=f"old-shape-{who}")
    done = await jobs.start_make(
        MakeImageRequest(
            user=who, platform="cli", prompt="an old fox", overrides={"width": 256, "height": 256}
        )
    )
    assert (await asyncio.wait_for(jobs.result(done.workflow_id), 60)).state is JobState.DONE
    before = await jobs.user(who)
    assert 0 < before.points < 777

    b = browser()
    r = await b.sign_in(await jobs.link_code(who))
    assert r.status_code == 303, r.text[:1000]
    page = (await b.client.get("/")).text
    after = await jobs.user(who)
    assert after.id == user_id and after.points == before.points  # not a point lost
    assert after.identities[0] == who and len(after.identities) == 2
    assert after.identities[1].startswith("web:")
    assert f'<strong id="balance">{before.points}</strong>' in page
    assert done.workflow_id in page  # the job started on Telegram shows on the page
    assert 'name="steps" value="7"' in page  # the saved settings fill the prompt box
    assert "777" in page  # the grant is in the ledger shown
    assert await asyncio.to_thread(jobs.stores.users.coll.count_documents, {"_id": user_id}) == 1
    assert jobs.stores.api_keys.list(who) == []
