"""Progress bars on stderr for verbs that can take more than a second."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click


class ProgressBars:
    """One bar at a time on stderr, keyed (one per episode, say), created when its size
    is known; call it as ``bars(key, done, total)``. Disabled: calls do nothing."""

    def __init__(self, enabled: bool, label: Callable[[Any], str] = str):
        self.enabled = enabled
        self._label = label
        self._bar: Any = None
        self._key: Any = None
        self._done = 0

    def __call__(self, key: Any, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None or key != self._key:
            self.close()
            self._key, self._done = key, 0
            self._bar = click.progressbar(
                length=max(total, 1), label=self._label(key), file=sys.stderr
            ).__enter__()
        self._bar.length = max(total, 1)
        self._bar.update(max(0, done - self._done))
        self._done = done

    def close(self, *, finished: bool = False) -> None:
        """End the bar; ``finished`` draws it full first (the work is done even when the
        last call reported a count short of the total: a bar left at 99% reads as a job
        that stopped)."""
        if self._bar is not None:
            if finished and self._bar.length is not None:
                self._bar.update(max(0, self._bar.length - self._bar.pos))
            self._bar.__exit__(None, None, None)
            self._bar = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(finished=exc_type is None)


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing one bar, or None when disabled."""
    if not enabled:
        yield None
        return
    with ProgressBars(True, label=lambda _key: label) as bars:
        yield lambda done, total: bars(None, done, total)
