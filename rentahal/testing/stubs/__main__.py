"""Command line entry point: ``python -m rentahal.testing.stubs --protocol ollama --port 11434``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn

from rentahal.testing.stubs import APP_FACTORIES
from rentahal.testing.stubs.state import DEFAULT_MODELS, Behaviour, StubState


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rentahal.testing.stubs", description="Run a stub AI server."
    )
    parser.add_argument("--protocol", choices=sorted(APP_FACTORIES), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names"
    )
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    behaviour = Behaviour(
        latency=args.latency,
        chunk_delay=args.chunk_delay,
        models=[name.strip() for name in args.models.split(",") if name.strip()],
    )
    app = APP_FACTORIES[args.protocol](StubState(behaviour=behaviour, api_key=args.api_key))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
