"""Test and benchmark support: stand-ins for the AI services RENT A HAL talks to.

The real workers need GPUs, so the suite runs against stub servers that speak the same
HTTP protocols from separate processes; see :mod:`rentahal.testing.stubs` and
:mod:`rentahal.testing.process`.
"""
