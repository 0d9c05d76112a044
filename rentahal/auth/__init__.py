"""Who is calling: signed session cookies for browsers, API keys for programs."""

from rentahal.auth.identity import Authenticator, Principal

__all__ = ["Authenticator", "Principal"]
