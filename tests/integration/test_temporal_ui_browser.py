"""The operator's view: a failed job's page in the Temporal Web UI, rendered by a real headless
Chromium (Debian's package, installed by .ci/run), says Failed.

The UI is a single-page app: plain HTTP would only see its empty shell, so the browser runs its
JavaScript against the dev server's UI port and we read the DOM it rendered (`--dump-dom`) and a
screenshot. Chromium's CLI needs no new Python dependency and downloads nothing."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest

from adapters.jobs import JobsClient
from domain.jobs import JobState, MakeImageRequest
from tests.integration.conftest import Stack

pytestmark = pytest.mark.stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# How Chromium runs here: as root (so no sandbox), no GPU, and nothing reaching out to Google's
# hosts (the machine's network is closed; without these flags it retries connections forever).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
    # Virtual time lets the SPA fetch the workflow and render before the DOM is dumped.
    "--virtual-time-budget=15000",
)


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run on `url` with a fresh profile directory."""
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        check=False,  # the caller asserts on what the page rendered, with stderr to show
        capture_output=True,
        text=True,
        timeout=120,
    )


def visible_text(dom: str) -> str:
    """The DOM without scripts, styles and tags: what a person reads on the page."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


class _StatusBadges(HTMLParser):
    """Texts of the elements the UI marks `data-testid="execution-status"`: the status badge.
    The page also says "Failed" in places that are not the status (the event filter's "Pending
    and Failed" menu), so the test reads the badge itself."""

    def __init__(self) -> None:
        super().__init__()
        self.badges: list[str] = []
        self._depth = 0  # >0 while inside a badge: count of open tags within it

    VOID = frozenset({"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        if self._depth:
            self._depth += 1
        elif ("data-testid", "execution-status") in attrs:
            self._depth = 1
            self.badges.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.badges[-1] += data


def status_badges(dom: str) -> list[str]:
    parser = _StatusBadges()
    parser.feed(dom)
    return [" ".join(b.split()) for b in parser.badges]


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (.ci/run installs Debian's chromium package; "
    "locally: apt-get install -y chromium)",
)
async def test_a_failed_jobs_page_in_the_temporal_ui_says_failed(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    user = f"cli:ui-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, user, 500)
    dev_stack.faults(faults={"execution_error": {"next": 1}})
    started = await jobs.start_make(
        MakeImageRequest(
            user=user,
            platform="cli",
            prompt="a fox that will not render",
            overrides={"width": 256, "height": 256, "steps": 4},
        )
    )
    result = await asyncio.wait_for(jobs.result(started.workflow_id), 60)
    assert result.state is JobState.FAILED

    url = jobs.job_url(started.workflow_id)
    assert url.startswith(dev_stack.endpoints.temporal_ui_url)
    dom_run = await asyncio.to_thread(chromium, url, tmp_path / "profile-dom", "--dump-dom")
    text = visible_text(dom_run.stdout)
    assert started.workflow_id in text, dom_run.stdout[-2000:] + dom_run.stderr[-2000:]
    # The status badge of a job that failed after its refund: a failed workflow, not Completed.
    assert status_badges(dom_run.stdout) == ["Failed"], text[:3000]

    shot = tmp_path / "failed-job.png"
    shot_run = await asyncio.to_thread(
        chromium, url, tmp_path / "profile-shot", f"--screenshot={shot}"
    )
    assert shot.exists() and shot.stat().st_size > 10_000, shot_run.stderr[-2000:]
    print(f"screenshot of {url}: {shot}")
