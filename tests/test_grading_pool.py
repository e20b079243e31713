import os
import time

import pytest

from nemo_recipes.grading.pool import WorkerPool, map_in_workers


def _square_or_misbehave(item: int) -> int:
    """Workers import this module by name; each special item breaks its worker a different way."""
    if item == 7:
        time.sleep(60)  # hangs past any deadline
    if item == 11:
        os._exit(3)  # dies mid-chunk, as a segfault in C code would
    if item == 13:
        raise ValueError("bad item")
    return item * item


def _failed(item, reason: str):
    return ("failed", item, reason)


def test_results_come_back_in_order_with_failures_isolated():
    start = time.perf_counter()
    results = map_in_workers(
        _square_or_misbehave, list(range(30)), workers=2, on_failure=_failed, item_deadline_s=2.0, chunk_size=4
    )
    assert time.perf_counter() - start < 20  # the hung worker was killed, not waited for
    for item, result in enumerate(results):
        if item in (7, 11, 13):
            assert result[:2] == ("failed", item)
        else:
            assert result == item * item
    assert "no answer within 2 s" in results[7][2]
    assert "died (exit code 3)" in results[11][2]
    assert "ValueError: bad item" in results[13][2]


def test_a_pool_serves_several_maps_and_replaces_a_dead_idle_worker():
    with WorkerPool(_square_or_misbehave, workers=2, on_failure=_failed, item_deadline_s=5.0) as pool:
        assert pool.map([1, 2, 3]) == [1, 4, 9]
        pool._workers[0].process.kill()  # dies between maps, while idle
        pool._workers[0].process.join()
        well_behaved = [item for item in range(40) if item not in (7, 11, 13)]
        assert pool.map(well_behaved, chunk_size=2) == [item * item for item in well_behaved]


def test_progress_is_reported_per_item():
    seen = []
    map_in_workers(_square_or_misbehave, [1, 2, 3, 4], workers=2, on_failure=_failed, item_deadline_s=5.0,
                   on_progress=seen.append)
    assert sum(seen) == 4


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(_square_or_misbehave, workers=0, on_failure=_failed, item_deadline_s=1.0)
