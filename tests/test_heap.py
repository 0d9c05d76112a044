"""The broker's process leaves the objects it made while starting out of garbage collection,
and collects young objects less often than Python's default."""

from __future__ import annotations

import gc
from pathlib import Path

from rentahal.api.app import YOUNG_COLLECTION_THRESHOLD, create_app
from rentahal.config import load_settings


async def test_once_started_the_broker_collects_garbage_less_and_never_its_own_objects(
    tmp_path: Path,
) -> None:
    app = create_app(load_settings(data_dir=tmp_path, health_check_interval=60))
    broker = app.state.broker
    threshold = gc.get_threshold()
    try:
        async with app.router.lifespan_context(app):
            # Frozen objects are in no generation: a collection never walks them again.
            assert gc.get_freeze_count() > 0
            assert not any(tracked is broker for tracked in gc.get_objects())
            assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
    finally:
        gc.unfreeze()  # this test's process is not a broker
        gc.set_threshold(*threshold)
