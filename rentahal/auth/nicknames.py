"""The one rule for nicknames, used by the bus (`set_nickname`) and registration."""

from __future__ import annotations

import re

from rentahal.bus.errors import ErrorCode, ProtocolError

MIN_CHARS = 3
NICKNAME = re.compile(r"[\w.-]+")
RESERVED_NICKNAMES = frozenset({"sysop", "admin", "system", "root", "broker", "rentahal"})
TAKEN = "Nickname already taken"


def check_nickname(nickname: str, max_chars: int) -> None:
    """Refuse a nickname nobody may choose: raises `ProtocolError` (INVALID for its form,
    CONFLICT for a reserved name). Whether another user has it is the store's to say."""
    if not MIN_CHARS <= len(nickname) <= max_chars or not NICKNAME.fullmatch(nickname):
        raise ProtocolError(
            ErrorCode.INVALID,
            f"a nickname is {MIN_CHARS} to {max_chars} letters, digits, '_', '.' or '-'",
        )
    if nickname.lower() in RESERVED_NICKNAMES:
        raise ProtocolError(ErrorCode.CONFLICT, TAKEN)
