"""Intents: what a user asks for in words, turned into a query or an answer (SPEC §7)."""

from rentahal.intents.base import (
    Answer,
    Intent,
    IntentCall,
    IntentError,
    IntentOutcome,
    Location,
    Submitted,
    Units,
)

__all__ = [
    "Answer",
    "Intent",
    "IntentCall",
    "IntentError",
    "IntentOutcome",
    "Location",
    "Submitted",
    "Units",
]
