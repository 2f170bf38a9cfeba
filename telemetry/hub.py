"""Fan-out of telemetry events from the producer thread to subscribers.

``publish`` runs on the producer thread (UI or env loop) at 60 Hz or more, so it only
appends to per-subscriber buffers: no I/O, no callbacks, no waiting on display
subscribers. Two kinds of subscriber:

* ``drop_oldest`` (HUDs, live plots, user callbacks): a bounded deque drained by the
  subscriber's own thread. When the deque is full the oldest event is dropped and
  counted: a display only cares about the latest state, and must never slow recording.
* ``durable`` (the SQLite sink): the event is handed to the subscriber's
  ``offer(event, timeout) -> bool`` on the producer thread. The subscriber bounds its own
  queue and decides between blocking and dropping; its errors (``QueueFull``,
  ``SinkError``) propagate to the producer because losing recorded data must not be
  silent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from .errors import Closed, InvalidInput
from .events import Event

Policy = Literal["drop_oldest", "durable"]

DEFAULT_MAXLEN = 256
_ERROR_LOG_INTERVAL = 5.0  # seconds between repeated "callback failed" log lines


@runtime_checkable
class DurableSubscriber(Protocol):
    """What a ``durable`` subscriber provides (``TelemetryDBSink`` does)."""

    def offer(self, event: Event, timeout: float | None = None) -> bool:
        """Queue ``event``; return False if it was dropped by the subscriber's policy."""
        ...


@dataclass(frozen=True, slots=True)
class SubscriberMetrics:
    """A snapshot of one subscriber's counters.

    Attributes:
        name: Subscriber name.
        policy: ``drop_oldest`` or ``durable``.
        maxlen: Buffer bound (``None`` for durable subscribers, which bound their own).
        depth: Events buffered now (0 for durable subscribers).
        high_water: Largest depth seen.
        delivered: Events passed to the callback, or accepted by ``offer``.
        dropped: Events dropped (oldest evicted, or ``offer`` returned False).
        errors: Callback exceptions.
    """

    name: str
    policy: str
    maxlen: int | None
    depth: int
    high_water: int
    delivered: int
    dropped: int
    errors: int


class _Subscriber:
    __slots__ = ("name", "policy", "maxlen", "high_water", "delivered", "dropped", "errors")

    def __init__(self, name: str, policy: str, maxlen: int | None):
        self.name = name
        self.policy = policy
        self.maxlen = maxlen
        self.high_water = 0
        self.delivered = 0
        self.dropped = 0
        self.errors = 0

    def put(self, event: Event) -> None:
        raise NotImplementedError

    def depth(self) -> int:
        return 0

    def close(self, timeout: float | None) -> None:
        pass

    def metrics(self) -> SubscriberMetrics:
        return SubscriberMetrics(
            self.name,
            self.policy,
            self.maxlen,
            self.depth(),
            self.high_water,
            self.delivered,
            self.dropped,
            self.errors,
        )


class _DurableSubscriber(_Subscriber):
    __slots__ = ("target", "timeout")

    def __init__(self, name: str, target: DurableSubscriber, timeout: float | None):
        super().__init__(name, "durable", None)
        self.target = target
        self.timeout = timeout

    def put(self, event: Event) -> None:
        if self.target.offer(event, self.timeout):
            self.delivered += 1
        else:
            self.dropped += 1


class _DropOldestSubscriber(_Subscriber):
    __slots__ = ("callback", "logger", "_buf", "_cond", "_closing", "_thread", "_last_log")

    def __init__(
        self, name: str, callback: Callable[[Event], Any], maxlen: int, logger: logging.Logger
    ):
        super().__init__(name, "drop_oldest", maxlen)
        self.callback = callback
        self.logger = logger
        self._buf: deque[Event] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._last_log = -_ERROR_LOG_INTERVAL
        self._thread = threading.Thread(target=self._run, name=f"telemetry-hub-{name}", daemon=True)
        self._thread.start()

    def put(self, event: Event) -> None:
        with self._cond:
            buf = self._buf
            if len(buf) >= self.maxlen:
                buf.popleft()
                self.dropped += 1
            buf.append(event)
            if len(buf) > self.high_water:
                self.high_water = len(buf)
            self._cond.notify()

    def depth(self) -> int:
        return len(self._buf)

    def _run(self) -> None:
        buf = self._buf
        while True:
            with self._cond:
                while not buf and not self._closing:
                    self._cond.wait()
                if not buf:  # closing and drained
                    return
                event = buf.popleft()
            try:
                self.callback(event)
            except Exception:
                self.errors += 1
                now = time.monotonic()
                # Log the first failure with its traceback, then at most one line per
                # interval: a callback failing at 60 Hz must not flood the log.
                if now - self._last_log >= _ERROR_LOG_INTERVAL:
                    self._last_log = now
                    self.logger.exception(
                        "hub subscriber %r callback failed (errors=%d)", self.name, self.errors
                    )
            else:
                self.delivered += 1

    def close(self, timeout: float | None) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.logger.warning(
                "hub subscriber %r did not finish within %ss; %d events left",
                self.name,
                timeout,
                len(self._buf),
            )


class TelemetryAsyncHub:
    """Publishes telemetry events to subscribers without blocking on display ones.

    Example:
        >>> with TelemetryAsyncHub() as hub:  # doctest: +SKIP
        ...     hub.subscribe("db", sink, policy="durable")
        ...     hub.subscribe("hud", hud.on_event, maxlen=64)
        ...     hub.publish(step_event)

    Args:
        logger: Logger for callback failures (default: the ``telemetry`` logger).
    """

    def __init__(self, *, logger: logging.Logger | None = None):
        self._logger = logger or logging.getLogger("telemetry")
        # Replaced, never mutated, so publish() iterates without taking a lock.
        self._subs: tuple[_Subscriber, ...] = ()
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(
        self,
        name: str,
        callback_or_sink: Callable[[Event], Any] | DurableSubscriber,
        *,
        maxlen: int | None = None,
        policy: Policy = "drop_oldest",
        timeout: float | None = None,
    ) -> None:
        """Add a subscriber.

        Args:
            name: Unique name, used in metrics, logs and the thread name.
            callback_or_sink: For ``drop_oldest``, a callable taking one event (called
                on the subscriber's thread). For ``durable``, an object with
                ``offer(event, timeout) -> bool``.
            maxlen: Buffer bound for ``drop_oldest`` (default 256). Durable subscribers
                bound their own queue, so passing it for them is an error.
            policy: ``drop_oldest`` or ``durable``.
            timeout: For ``durable``: passed to ``offer`` (``None``: the subscriber's
                own block timeout).

        Raises:
            InvalidInput: Duplicate name, unknown policy, bad ``maxlen``, or a target
                that does not fit the policy.
            Closed: The hub is closed.
        """
        sub: _Subscriber
        if policy == "drop_oldest":
            if not callable(callback_or_sink):
                raise InvalidInput(f"subscriber {name!r}: drop_oldest needs a callable")
            bound = DEFAULT_MAXLEN if maxlen is None else maxlen
            if not isinstance(bound, int) or bound < 1:
                raise InvalidInput(f"subscriber {name!r}: maxlen must be a positive int")
            make = lambda: _DropOldestSubscriber(name, callback_or_sink, bound, self._logger)  # noqa: E731
        elif policy == "durable":
            if not isinstance(callback_or_sink, DurableSubscriber):
                raise InvalidInput(
                    f"subscriber {name!r}: durable needs an object with offer(event, timeout)"
                )
            if maxlen is not None:
                raise InvalidInput(
                    f"subscriber {name!r}: a durable subscriber bounds its own queue; "
                    "set its size on the subscriber (e.g. TelemetryDBSink(max_queue=...))"
                )
            make = lambda: _DurableSubscriber(name, callback_or_sink, timeout)  # noqa: E731
        else:
            raise InvalidInput(f"unknown policy {policy!r}; use 'drop_oldest' or 'durable'")
        with self._lock:
            if self._closed:
                raise Closed("telemetry hub")
            if any(s.name == name for s in self._subs):
                raise InvalidInput(f"a subscriber named {name!r} already exists")
            sub = make()
            self._subs = (*self._subs, sub)

    def unsubscribe(self, name: str, timeout: float | None = 5.0) -> None:
        """Remove a subscriber, delivering what its buffer holds first.

        Raises:
            InvalidInput: No subscriber has that name.
        """
        with self._lock:
            found = [s for s in self._subs if s.name == name]
            if not found:
                raise InvalidInput(f"no subscriber named {name!r}")
            self._subs = tuple(s for s in self._subs if s.name != name)
        found[0].close(timeout)

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscriber; call from the producer thread.

        Display subscribers only get the event appended to their buffer. Durable
        subscribers' ``offer`` runs here and may block up to their timeout.

        Raises:
            Closed: The hub is closed.
            QueueFull, SinkError: Propagated from a durable subscriber.
        """
        if self._closed:
            raise Closed("telemetry hub")
        for sub in self._subs:
            sub.put(event)

    def metrics(self) -> dict[str, SubscriberMetrics]:
        """Return a snapshot of every subscriber's counters, by name."""
        return {s.name: s.metrics() for s in self._subs}

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop accepting events, let display subscribers drain, and join their threads.

        Durable subscribers are not closed: their owner closes them (after the hub).
        Idempotent.

        Args:
            timeout: Seconds to wait for each subscriber thread.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs, self._subs = self._subs, ()
        for sub in subs:
            sub.close(timeout)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> TelemetryAsyncHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True) and self._subs:
            import warnings

            warnings.warn(
                "TelemetryAsyncHub was not closed; call close() or use it as a context manager",
                ResourceWarning,
                stacklevel=2,
            )


__all__ = ["DurableSubscriber", "SubscriberMetrics", "TelemetryAsyncHub"]
