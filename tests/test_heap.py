"""The broker's process leaves the objects it made while starting out of garbage collection."""

from __future__ import annotations

import gc
from pathlib import Path

from rentahal.api.app import create_app
from rentahal.config import load_settings


async def test_once_started_the_broker_never_collects_its_startup_objects_again(
    tmp_path: Path,
) -> None:
    app = create_app(load_settings(data_dir=tmp_path, health_check_interval=60))
    broker = app.state.broker
    try:
        async with app.router.lifespan_context(app):
            # Frozen objects are in no generation: a collection never walks them again.
            assert gc.get_freeze_count() > 0
            assert not any(tracked is broker for tracked in gc.get_objects())
    finally:
        gc.unfreeze()  # this test's process is not a broker
