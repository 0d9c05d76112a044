"""The one rule for nicknames, used by the bus (`set_nickname`) and registration."""

from __future__ import annotations

import re

from rentahal.core.errors import ErrorCode, ProtocolError

MIN_CHARS = 3
NICKNAME = re.compile(r"[\w.-]+")
RESERVED_NICKNAMES = frozenset({"sysop", "admin", "system", "root", "broker", "rentahal"})
TAKEN = "Nickname already taken"
# The form of the nicknames guests are given (`user_` and 8 hex digits of their id). Nobody
# may choose one: a guest is stored only when it first acts, and its nickname must still be
# free then (and nobody can pass for a guest they saw).
GUEST_NICKNAME = re.compile(r"user_[0-9a-f]{8}", re.IGNORECASE)
# The accounts of peer installations (`rentahal.federation.peers.peer_account`): nobody may
# choose such a name, so a peer's account is never someone else's.
PEER_PREFIX = "peer-"


def check_nickname(nickname: str, max_chars: int, *, current: str | None = None) -> None:
    """Refuse a nickname nobody may choose: raises `ProtocolError` (INVALID for its form,
    CONFLICT for a reserved name, or a guest's form other than the `current` one). Whether
    another user has it is the store's to say."""
    if not MIN_CHARS <= len(nickname) <= max_chars or not NICKNAME.fullmatch(nickname):
        raise ProtocolError(
            ErrorCode.INVALID,
            f"a nickname is {MIN_CHARS} to {max_chars} letters, digits, '_', '.' or '-'",
        )
    if nickname.lower() in RESERVED_NICKNAMES or nickname.lower().startswith(PEER_PREFIX):
        raise ProtocolError(ErrorCode.CONFLICT, TAKEN)
    if GUEST_NICKNAME.fullmatch(nickname) and nickname.lower() != (current or "").lower():
        raise ProtocolError(ErrorCode.CONFLICT, TAKEN)
