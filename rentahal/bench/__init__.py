"""Benchmarks of the broker, run as `rentahal bench ...` (see docs/benchmarks.md).

Benchmarks are not tests: they print figures rather than pass or fail, and those figures
only mean something next to a baseline measured in the same run on the same machine. Each
one therefore measures what the hardware can do without the broker (the *direct* baseline)
and what it does through the broker side by side, and reports their ratio. Everything runs
as real processes on 127.0.0.1 (stub workers, the broker, the load generator), exactly as
the end-to-end tests do, so the figures include the network stack and JSON on both hops.
"""
