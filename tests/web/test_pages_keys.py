"""The page's API keys and webhook secret (issue 18 item 4): made, listed and revoked through
the same stores the API, the bot's /apikey and the CLI use; every POST needs the CSRF token."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from adapters.jobs import JobsClient
from tests.web.conftest import Browser, signed_in, telegram_user

pytestmark = pytest.mark.stack


def shown_key(html: str) -> str:
    found = re.search(r'id="new-key">[^<]*<code>(st_[^<]+)</code>', html)
    assert found, html[-3000:]
    return found.group(1)


async def test_a_key_made_on_the_page_is_shown_once_works_and_is_revoked(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b, who = await signed_in(jobs, browser)
    r = await b.post("/api-keys", name="laptop")
    assert r.status_code == 200, r.text[:500]
    token = shown_key(r.text)
    key = jobs.stores.api_keys.verify(token)
    assert key is not None and key.name == "laptop"
    # The store's listing and the page agree; the key itself is never shown again.
    page = (await b.client.get("/")).text
    assert key.key_id in page and token not in page
    # A key the bot made for the Telegram identity shows and is revocable here too.
    _, bot_key = jobs.stores.api_keys.create(who, "bot")
    assert bot_key.key_id in (await b.client.get("/")).text
    for kid in (key.key_id, bot_key.key_id):
        r = await b.post(f"/api-keys/{kid}/revoke")
        assert r.status_code == 200, r.text[:500]
    assert jobs.stores.api_keys.verify(token) is None
    assert all(not k.active for k in jobs.stores.api_keys.list(who))


async def test_another_accounts_key_cannot_be_revoked(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    victim = await telegram_user(jobs)
    token, key = jobs.stores.api_keys.create(victim, "theirs")
    b, _ = await signed_in(jobs, browser)
    r = await b.post(f"/api-keys/{key.key_id}/revoke")
    assert r.status_code == 404, r.text[:500]
    assert key.key_id not in (await b.client.get("/")).text
    assert jobs.stores.api_keys.verify(token) is not None


async def test_key_and_secret_forms_refuse_a_missing_or_forged_csrf_token(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b, who = await signed_in(jobs, browser)
    token, key = jobs.stores.api_keys.create(who, "mine")
    owner = await jobs.user(who)
    secret = jobs.stores.webhook_secrets.secret(owner.id)
    paths = ("/api-keys", f"/api-keys/{key.key_id}/revoke", "/webhook-secret")
    for data in ({}, {"csrf": "forged"}):
        for path in (*paths, "/webhook-secret/rotate"):
            r = await b.client.post(path, data=data)
            assert r.status_code == 403, (path, r.status_code)
            assert secret not in r.text
    assert jobs.stores.api_keys.verify(token) is not None
    assert len(jobs.stores.api_keys.list(who)) == 1
    assert jobs.stores.webhook_secrets.secret(owner.id) == secret


async def test_the_webhook_secret_is_shown_on_request_and_rotated(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b, who = await signed_in(jobs, browser)
    owner = await jobs.user(who)
    secret = jobs.stores.webhook_secrets.secret(owner.id)
    assert secret not in (await b.client.get("/")).text
    r = await b.post("/webhook-secret")
    assert r.status_code == 200 and secret in r.text
    r = await b.post("/webhook-secret/rotate")
    assert r.status_code == 200
    fresh = jobs.stores.webhook_secrets.secret(owner.id)
    assert fresh != secret and fresh in r.text and secret not in r.text
