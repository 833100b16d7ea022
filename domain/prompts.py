"""Prompt rules: 1 … 2000 characters after trimming, no control characters.

The negative prompt goes into the same graph as text, so it is cleaned by the same function
(`strip_controls`); it may be empty and has its own length limit.
"""

from __future__ import annotations

import unicodedata

from domain.errors import PromptError
from domain.rules import DEFAULT_RULES, SettingRanges


def strip_controls(text: str) -> str:
    """`text` with every control, format or unassigned character (Unicode category C) but
    newline and tab turned into a space, trimmed."""
    return "".join(
        ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else " " for ch in text
    ).strip()


def clean_prompt(text: str, ranges: SettingRanges = DEFAULT_RULES.ranges) -> str:
    """The prompt as it is sent to ComfyUI, or a PromptError saying what is wrong."""
    if not isinstance(text, str):
        raise PromptError("the prompt must be text")
    cleaned = strip_controls(text)
    if not cleaned:
        raise PromptError("the prompt is empty: describe the image you want")
    if len(cleaned) > ranges.prompt_max_chars:
        raise PromptError(
            f"the prompt is {len(cleaned)} characters; the limit is {ranges.prompt_max_chars}"
        )
    return cleaned
