"""Resolving a user reference (a `User`, an identity or a user id) to the user id.

Its own module because both the ledger and the user repository need it, and the user
repository builds on the ledger (the starter grant): kept in store.users it made an import
circle.
"""

from __future__ import annotations

from typing import Any

from pymongo.client_session import ClientSession
from pymongo.collection import Collection

from domain.errors import UnknownUser
from domain.identity import normalise_identity
from domain.users import User


def resolve_user_id(
    users: Collection[Any], user: User | str, session: ClientSession | None = None
) -> str:
    """The user id behind a `User`, an identity (`telegram:5472638766`) or a user id.

    Our user ids never contain ':' and identities always do, so a string is unambiguous.
    Raises UnknownUser when nobody has that identity or id.
    """
    if isinstance(user, User):
        return user.id
    if ":" in user:
        identity = normalise_identity(user)
        doc = users.find_one({"identities": identity}, {"_id": 1}, session=session)
    else:
        doc = users.find_one({"_id": user}, {"_id": 1}, session=session)
    if doc is None:
        raise UnknownUser(user)
    return str(doc["_id"])
