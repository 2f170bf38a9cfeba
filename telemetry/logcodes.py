"""Codes of the structured log lines that telemetry (and the frame writer) emit.

Every line starts with its code followed by ``key=value`` pairs, so that logs can be
grepped and parsed without a schema. All lines go to the logger named ``telemetry``
unless a component is given its own logger. The frame writer reuses LOG931, LOG932 and
LOG934 for its own queue, adding ``queue=frames``; the DB sink uses ``queue=db``.

============  =========  ===================================================================
code          level      meaning and fields
============  =========  ===================================================================
``LOG931``    INFO       Queue depth snapshot, every ``snapshot_interval`` seconds while
                         running: ``queue= queue_depth= high_water= bound=`` (+ the
                         component's counters, e.g. ``steps_committed= steps_dropped=``).
``LOG932``    WARNING    A queue reached 80% (``QUEUE_WARN_FRACTION``) of its bound:
                         ``queue= queue_depth= bound= policy=``. Logged once per crossing;
                         re-armed when the depth falls below 50% (``QUEUE_REARM_FRACTION``)
                         so a queue hovering at the threshold does not flood the log.
``LOG933``    DEBUG      Statistics of one flush (one SQLite commit): ``steps= events=
                         resolve_ms= commit_ms= ms=``.
``LOG934``    WARNING    A flush (frame resolve + commit) took longer than
                         ``SLOW_FLUSH_MS``: ``queue= steps= resolve_ms= commit_ms= ms=
                         threshold_ms=``. A slow disk or a stalled frame writer shows here
                         first.
============  =========  ===================================================================
"""

from __future__ import annotations

LOGGER_NAME = "telemetry"

QUEUE_SNAPSHOT = "LOG931"
QUEUE_HIGH = "LOG932"
FLUSH_STATS = "LOG933"
FLUSH_SLOW = "LOG934"

#: Fraction of a queue's bound at which LOG932 is emitted.
QUEUE_WARN_FRACTION = 0.8
#: Fraction of a queue's bound below which LOG932 is re-armed.
QUEUE_REARM_FRACTION = 0.5
#: A flush slower than this (milliseconds) is logged as LOG934.
SLOW_FLUSH_MS = 250.0

__all__ = [
    "FLUSH_SLOW",
    "FLUSH_STATS",
    "LOGGER_NAME",
    "QUEUE_HIGH",
    "QUEUE_REARM_FRACTION",
    "QUEUE_SNAPSHOT",
    "QUEUE_WARN_FRACTION",
    "SLOW_FLUSH_MS",
]
