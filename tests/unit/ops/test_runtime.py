"""tune_gc: the start-up heap leaves the collector's view and young collections are rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamsync.ops.runtime import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_gc_freezes_the_heap_and_raises_thresholds(restore_gc: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 1000  # modules, classes, settings built so far
    tune_gc()  # again: still valid
    assert gc.get_threshold() == GC_THRESHOLDS
