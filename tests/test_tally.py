"""The per-call metric updates are queued and applied in batches, and a collection
(a scrape, from any thread) first applies every queued one, so what it reads is exact."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

from authority.ops.metrics import Metrics
from authority.ops.tally import Deferred, Tally


def _registry(batch: int) -> tuple[CollectorRegistry, Tally, Counter, Histogram]:
    registry = CollectorRegistry()
    tally = Tally(batch)
    registry.register(tally)
    counter = Counter("calls", "Calls.", ["code"], registry=registry)
    histogram = Histogram("seconds", "Seconds.", registry=registry, buckets=(0.001, 0.01))
    return registry, tally, counter, histogram


def test_queued_updates_wait_for_the_batch_and_a_collection_applies_them_first() -> None:
    registry, tally, counter, histogram = _registry(batch=1000)
    ok = counter.labels("OK")
    for _ in range(10):
        tally.add(ok.inc, 1)
    tally.add(histogram.observe, 0.005)

    assert ok._value.get() == 0  # queued, not yet applied
    # The tally is registered first: the series read after it include what it applied.
    assert registry.get_sample_value("calls_total", {"code": "OK"}) == 10
    assert registry.get_sample_value("seconds_bucket", {"le": "0.001"}) == 0
    assert registry.get_sample_value("seconds_bucket", {"le": "0.01"}) == 1
    assert registry.get_sample_value("seconds_sum") == 0.005


def test_a_full_batch_is_applied_by_the_call_that_fills_it() -> None:
    _, tally, counter, _ = _registry(batch=4)
    ok = counter.labels("OK")
    for _ in range(3):
        tally.add(ok.inc, 1)
    assert ok._value.get() == 0
    tally.add(ok.inc, 1)
    assert ok._value.get() == 4


def test_a_deferred_counter_counts_through_the_tally() -> None:
    metrics = Metrics()
    valid = metrics.validation_outcomes[None]
    assert isinstance(valid, Deferred)
    for _ in range(3):
        valid.inc()
    assert metrics.registry.get_sample_value("authority_validations_total", {"outcome": "valid"}) == 3


def test_updates_applied_by_a_scraping_thread_and_the_caller_at_once_each_count_once() -> None:
    registry, tally, counter, _ = _registry(batch=7)
    ok = counter.labels("OK")
    updates = 50_000
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            registry.get_sample_value("calls_total", {"code": "OK"})

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    for thread in scrapers:
        thread.start()
    try:
        for _ in range(updates):
            tally.add(ok.inc, 1)
    finally:
        stop.set()
        for thread in scrapers:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in scrapers)
    assert registry.get_sample_value("calls_total", {"code": "OK"}) == updates
