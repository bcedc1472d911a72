"""A service process's garbage collector: startup objects frozen, young collections rarer."""

from __future__ import annotations

import gc
import weakref

import pytest

from shared.service import YOUNG_GENERATION_THRESHOLD, settle_garbage_collector

pytestmark = pytest.mark.unit


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settled_collector_freezes_startup_objects_and_still_frees_cycles() -> None:
    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
        assert gc.get_freeze_count() > 0

        # Garbage made after startup is still collected: a reference cycle goes away.
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        alive = weakref.ref(first)
        del first, second
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
