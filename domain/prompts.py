"""Prompt rules: 1 … 2000 characters after trimming, no control characters."""

from __future__ import annotations

import unicodedata

from domain.errors import PromptError
from domain.rules import DEFAULT_RULES, SettingRanges


def clean_prompt(text: str, ranges: SettingRanges = DEFAULT_RULES.ranges) -> str:
    """The prompt as it is sent to ComfyUI, or a PromptError saying what is wrong."""
    if not isinstance(text, str):
        raise PromptError("the prompt must be text")
    cleaned = "".join(
        ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else " " for ch in text
    ).strip()
    if not cleaned:
        raise PromptError("the prompt is empty: describe the image you want")
    if len(cleaned) > ranges.prompt_max_chars:
        raise PromptError(
            f"the prompt is {len(cleaned)} characters; the limit is {ranges.prompt_max_chars}"
        )
    return cleaned
