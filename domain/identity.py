"""User identities: one person, one identity per platform, written `platform:id`."""

from __future__ import annotations

import re

from domain.errors import InvalidIdentity

PLATFORMS = ("telegram", "discord", "web", "cli")
_IDENTITY = re.compile(r"^(?P<platform>[a-z]+):(?P<local>[A-Za-z0-9_.@-]{1,64})$")


def parse_identity(text: str) -> tuple[str, str]:
    """Split `telegram:5472638766` into its platform and local id, refusing anything else."""
    m = _IDENTITY.match(text.strip())
    if not m:
        raise InvalidIdentity(
            f"invalid user {text!r}: expected platform:id, e.g. telegram:5472638766"
        )
    platform = m.group("platform")
    if platform not in PLATFORMS:
        raise InvalidIdentity(f"unknown platform {platform!r} in {text!r} (one of {PLATFORMS})")
    return platform, m.group("local")


def normalise_identity(text: str) -> str:
    platform, local = parse_identity(text)
    return f"{platform}:{local}"


def id_fragment(identity: str) -> str:
    """The identity as it appears in workflow ids (`telegram-5472638766`)."""
    return identity.replace(":", "-")
