"""TelemetryAsyncHub: fan-out, drop-oldest, failing callbacks, lifecycle."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import wait_for

from telemetry.errors import Closed, InvalidInput, QueueFull
from telemetry.events import Step
from telemetry.hub import TelemetryAsyncHub


def step(i: int) -> Step:
    return Step(1, i, "0", 0.0, False, False, "{}", float(i))


def hub_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("telemetry-hub-")]


class RecordingSink:
    """A durable subscriber that accepts everything (or refuses, or raises)."""

    def __init__(self, accept=True, error=None):
        self.events = []
        self.accept = accept
        self.error = error
        self.timeouts = []

    def offer(self, event, timeout=None):
        self.timeouts.append(timeout)
        if self.error:
            raise self.error
        if self.accept:
            self.events.append(event)
        return self.accept


def test_fan_out_in_order():
    a, b = [], []
    sink = RecordingSink()
    with TelemetryAsyncHub() as hub:
        hub.subscribe("a", a.append, maxlen=1000)
        hub.subscribe("b", b.append, maxlen=1000)
        hub.subscribe("db", sink, policy="durable", timeout=2.0)
        events = [step(i) for i in range(500)]
        for e in events:
            hub.publish(e)
    assert a == events and b == events and sink.events == events
    assert set(sink.timeouts) == {2.0}
    assert hub_threads() == []


def test_drop_oldest_counts_and_keeps_newest():
    release = threading.Event()
    seen = []

    def slow(event):
        release.wait(5)
        seen.append(event.step)

    hub = TelemetryAsyncHub()
    try:
        hub.subscribe("hud", slow, maxlen=4)
        hub.publish(step(0))
        wait_for(lambda: hub.metrics()["hud"].depth == 0)  # 0 is inside the callback
        for i in range(1, 11):
            hub.publish(step(i))
        m = hub.metrics()["hud"]
        assert (m.depth, m.dropped, m.high_water, m.maxlen) == (4, 6, 4, 4)
    finally:
        release.set()
        hub.close()
    assert seen == [0, 7, 8, 9, 10]
    assert hub.metrics() == {}  # closed hubs hold no subscribers


def test_publish_is_cheap_with_a_stalled_display():
    release = threading.Event()
    with TelemetryAsyncHub() as hub:
        hub.subscribe("stuck", lambda e: release.wait(5), maxlen=8)
        start = time.perf_counter()
        for i in range(2000):
            hub.publish(step(i))
        per_event = (time.perf_counter() - start) / 2000
        release.set()
    assert per_event < 200e-6  # generous for CI; typically a few microseconds


def test_failing_callback_does_not_break_publish(caplog):
    good = []

    def bad(event):
        raise RuntimeError("display bug")

    with TelemetryAsyncHub() as hub:
        hub.subscribe("bad", bad)
        hub.subscribe("good", good.append)
        for i in range(20):
            hub.publish(step(i))
        wait_for(lambda: hub.metrics()["bad"].errors == 20)
        wait_for(lambda: hub.metrics()["good"].delivered == 20)
        m = hub.metrics()
    assert len(good) == 20
    assert m["bad"].delivered == 0 and m["good"].delivered == 20
    failures = [r for r in caplog.records if "display bug" in (r.exc_text or "")]
    assert len(failures) == 1  # rate-limited


def test_durable_errors_and_refusals_reach_the_producer():
    with TelemetryAsyncHub() as hub:
        refusing = RecordingSink(accept=False)
        hub.subscribe("drop", refusing, policy="durable")
        hub.publish(step(0))
        assert hub.metrics()["drop"].dropped == 1
        hub.subscribe("full", RecordingSink(error=QueueFull("q", 0.1)), policy="durable")
        with pytest.raises(QueueFull):
            hub.publish(step(1))


def test_close_joins_threads_and_rejects_publish():
    hub = TelemetryAsyncHub()
    for name in "abc":
        hub.subscribe(name, lambda e: None)
    assert len(hub_threads()) == 3
    hub.close()
    hub.close()  # idempotent
    assert hub_threads() == []
    with pytest.raises(Closed):
        hub.publish(step(0))
    with pytest.raises(Closed):
        hub.subscribe("late", lambda e: None)


def test_unsubscribe_drains_and_joins():
    got = []
    with TelemetryAsyncHub() as hub:
        hub.subscribe("x", got.append)
        for i in range(10):
            hub.publish(step(i))
        hub.unsubscribe("x")
        assert [e.step for e in got] == list(range(10))
        assert hub_threads() == []
        with pytest.raises(InvalidInput):
            hub.unsubscribe("x")


def test_subscribe_validation():
    with TelemetryAsyncHub() as hub:
        hub.subscribe("a", lambda e: None)
        with pytest.raises(InvalidInput, match="already"):
            hub.subscribe("a", lambda e: None)
        with pytest.raises(InvalidInput, match="policy"):
            hub.subscribe("b", lambda e: None, policy="newest")
        with pytest.raises(InvalidInput, match="offer"):
            hub.subscribe("c", lambda e: None, policy="durable")
        with pytest.raises(InvalidInput, match="bounds its own"):
            hub.subscribe("d", RecordingSink(), policy="durable", maxlen=10)
        with pytest.raises(InvalidInput, match="maxlen"):
            hub.subscribe("e", lambda e: None, maxlen=0)
