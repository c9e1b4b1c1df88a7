"""``event_checks.warm_up`` runs once per process and arguments, even when the sink's
warm-up thread and a partition assignment ask for it at the same time."""

from __future__ import annotations

import threading

from skewless import event_checks


def test_concurrent_warm_ups_run_the_setup_once():
    event_checks._warm_up.cache_clear()
    start = threading.Barrier(4)

    def warm():
        start.wait()
        event_checks.warm_up("transactions", 1234.0)

    threads = [threading.Thread(target=warm) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info = event_checks._warm_up.cache_info()
    assert (info.misses, info.hits) == (1, 3)
