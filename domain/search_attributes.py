"""The search attributes every job workflow carries: the one place their keys are declared.

The jobs client sets them at start, the workflows upsert `JobState` (and a cook's pieces
`ParentJob`), operators filter on them in the Web UI and `temporal workflow list`. The dev stack
registers `SEARCH_ATTRIBUTES` on the server (workers/config.py); a real cluster needs them
created once with `temporal operator search-attribute create`.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

USER_ID = SearchAttributeKey.for_keyword("UserId")
PLATFORM = SearchAttributeKey.for_keyword("Platform")
JOB_KIND = SearchAttributeKey.for_keyword("JobKind")
JOB_STATE = SearchAttributeKey.for_keyword("JobState")
# A cook's id on each of its pieces: job lists leave pieces out.
PARENT_JOB = SearchAttributeKey.for_keyword("ParentJob")

# name -> Temporal's type name, as the dev server and `operator search-attribute create` take it
SEARCH_ATTRIBUTES: dict[str, str] = {
    key.name: "Keyword" for key in (USER_ID, PLATFORM, JOB_KIND, JOB_STATE, PARENT_JOB)
}
