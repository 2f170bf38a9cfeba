"""``close_all``: the one way framestore shuts several things down.

Every closer runs, whatever the ones before it raised (a writer that failed must not
keep the sink's rows from committing, nor the lock from being released); then the first
error is raised and the later ones are logged, so none is lost silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

__all__ = ["close_all"]

log = logging.getLogger("framestore")


def close_all(closers: Iterable[Callable[[], object]]) -> None:
    """Call each closer in order; raise the first error once all have run."""
    first: BaseException | None = None
    for close in closers:
        try:
            close()
        except BaseException as e:  # noqa: BLE001 - close the rest, then raise the first
            if first is None:
                first = e
            else:
                log.error("while closing after an earlier error: %r", e)
    if first is not None:
        raise first
