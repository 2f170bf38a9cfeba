"""Whether an array ``env.render()`` just returned can be handed over to the store
(``Recorder.record_step(..., owned=True)``): nothing but the caller can reach it.

An environment that renders into a buffer it keeps and refills (or returns a view of
one) still holds a reference to that buffer, or to the array under the view; a fresh
array (ale-py's ``getScreenRGB()``, Box2D CarRacing's transposed copy: tested in
tests/gym/test_render_handover.py) is referenced by the caller alone, and so is every
object under it (its ``base`` chain, a memoryview's exporter). Reference counts are
compared with those of an array made here and walked the same way, so the check
follows the interpreter's own counting. An extension type that exports memory it does
not own without holding a reference to the owner would pass for fresh (none is known
among the environments this project records).

Only where those counts are known to mean what the check assumes: CPython up to 3.13 with
the GIL (the versions tested). CPython 3.14 lets the interpreter borrow references
(fewer counted than held) and a free-threaded build counts per thread, so there every
frame is copied, as without the hand-over.
"""

from __future__ import annotations

import platform
import sys
import sysconfig

import numpy as np

#: Whether reference counts can be trusted to tell a fresh array here (see above).
COUNTS_TRUSTED = (
    platform.python_implementation() == "CPython"
    and sys.version_info < (3, 14)
    and not sysconfig.get_config_var("Py_GIL_DISABLED")
)


def _counts(frame: object) -> list[int]:
    """Reference counts of ``frame`` and each object under it (base, exporter)."""
    counts = [sys.getrefcount(frame)]
    obj = frame.base if isinstance(frame, np.ndarray) else None
    while obj is not None:
        counts.append(sys.getrefcount(obj))
        if isinstance(obj, np.ndarray):
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            obj = None
    return counts


def _owner(frame: object) -> object:
    """The object at the end of ``frame``'s chain of bases and exporters."""
    obj = frame
    while True:
        under = obj.base if isinstance(obj, np.ndarray) else None
        if isinstance(obj, memoryview):
            under = obj.obj
        if under is None:
            return obj
        obj = under


def _owns_memory(obj: object) -> bool:
    """Whether ``obj`` owns the memory it exposes, so that nobody referencing it means
    nobody can write that memory: a numpy array that owns its data, bytes, a bytearray,
    or ale-py's screen array (a nanobind ndarray ``getScreenRGB()`` allocates per call;
    tests/gym/test_render_handover.py). Any other exporter (a pygame surface's buffer, a
    torch tensor, a ctypes array, a pybind11 capsule) may wrap memory its owner keeps
    without holding a reference to the owner: such frames are copied."""
    if isinstance(obj, np.ndarray):
        return bool(obj.flags.owndata)
    if isinstance(obj, bytes | bytearray):
        return True
    kind = type(obj)
    return (kind.__module__, kind.__name__) == ("nanobind", "nb_ndarray")


def _probe(frame: object) -> list[int]:
    # called as ``only_caller_holds`` calls ``_counts``: the same frames in between
    return _counts(frame)


def _reference_counts() -> tuple[int, int]:
    """The counts of a fresh view held in one local variable, and of its base."""
    frame = np.empty(4, dtype=np.uint8)[1:3]
    head, base = _probe(frame)
    return head, base


_HEAD, _UNDER = _reference_counts()


def only_caller_holds(frame: object, containers: int = 0) -> bool:
    """Whether ``frame`` (held in one local variable of the caller, and by
    ``containers`` containers such as the tuple ``render()`` returned) and everything
    under it are referenced by nobody else."""
    if not COUNTS_TRUSTED or not _owns_memory(_owner(frame)):
        return False
    head, *under = _counts(frame)
    return head <= _HEAD + containers and all(c <= _UNDER for c in under)


def _sequence_count(frames: object) -> int:
    return sys.getrefcount(frames)


def _probe_sequence(frames: object) -> int:
    # called as ``caller_alone_holds_all`` calls ``_sequence_count``: one frame between
    return _sequence_count(frames)


def _reference_sequence_count() -> int:
    """The count of a fresh list held in one local variable, asked the same way."""
    frames = [np.empty(1, dtype=np.uint8)]
    return _probe_sequence(frames)


_SEQUENCE = _reference_sequence_count()


def caller_alone_holds_all(frames: list | tuple) -> bool:
    """Whether the sequence a vector ``render()`` returned (held in one local variable
    of the caller) is referenced by nobody else, and so is each frame in it: a wrapper
    that keeps its list of frames and refills them would otherwise pass, each frame
    being held only by that list."""
    if not COUNTS_TRUSTED or _sequence_count(frames) > _SEQUENCE:
        return False
    return all(only_caller_holds(frame, containers=1) for frame in frames)
