"""``close_all``: the one way framestore shuts several things down.

Every closer runs, whatever the ones before it raised (a writer that failed must not
keep the sink's rows from committing, nor the lock from being released); then the first
error is raised and the later ones are logged, so none is lost silently.

``close_on_exit``: the one ``__exit__`` policy of what framestore opens (a store, a
recorder, a frame writer): closed either way; after the caller's own exception, an error
of the close is logged and the caller's exception is the one that rises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

__all__ = ["close_all", "close_on_exit"]

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


def close_on_exit(close: Callable[[], object], failing: bool) -> None:
    """``__exit__``'s policy: ``close()``; its error rises unless the ``with`` block is
    already ``failing`` (leaving with an exception), when it is logged instead."""
    if not failing:
        close()
        return
    try:
        close()
    except Exception as e:  # keep the caller's exception, log ours
        log.error("while closing after an error: %s", e)
