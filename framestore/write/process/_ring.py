"""Shared memory between a producer and its storage process.

Two blocks, both created by the producer (``multiprocessing.shared_memory``):

- ``Control``: a few int64 counters the storage process publishes (bytes read off the
  command pipe, queue weight committed, frames written and released, metrics), so the
  producer learns about progress without a message or a lock;
- ``FrameRing``: fixed-size frame slots and one state byte per slot. The producer claims
  a free slot (state 0 -> 1) and copies a frame into it; the storage process compresses
  straight from the slot and frees it (1 -> 0) once the frame's chunk is written. Each
  transition has one writer, so no lock is shared between the processes. The producer
  never writes into a slot whose state is 1.

Slots are sized from the first frame (rounded up to 64 bytes) and counted so that
``slots * slot_bytes <= queue_bytes`` and ``slots <= queue_frames``: the ring is the
writer queue of ``FrameStorageService``, bounded the same way.

Exactly one process unlinks each block: the producer on close, or the storage process
once the producer has died. If both die, the producer's resource tracker unlinks what is
left (see ``_Block``). If the tracker dies too (the whole process group SIGKILLed), the
blocks' names say whose they were (``framestore_<producer pid>_<random>``):
``remove_dead_blocks`` (run by the next recorder's storage start and by ``recover``)
removes those whose producer is gone.

Every block's pages are reserved when it is created (``posix_fallocate``): a tmpfs
(``/dev/shm``) accepts a file larger than its room and kills the process that touches a
page past it with SIGBUS; reserved pages cannot be taken by another recorder, and a block
that does not fit is ``SharedMemoryFull`` (one line) before anyone touches it.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import secrets
import stat
from enum import IntEnum
from multiprocessing import resource_tracker

import numpy as np

from ...errors import SharedMemoryFull

__all__ = [
    "NAME_PREFIX",
    "SHM_DIR",
    "Control",
    "Counter",
    "FrameRing",
    "remove_dead_blocks",
    "slot_geometry",
]

#: Every block's name starts with this, then the producer's pid (tests look for leaks).
NAME_PREFIX = "framestore_"
#: Where Linux keeps POSIX shared memory blocks by name.
SHM_DIR = "/dev/shm"
_ALIGN = 64


_NAME = re.compile(rf"{NAME_PREFIX}(\d+)_[0-9a-f]+")


def _new_name() -> str:
    return f"{NAME_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"


def shm_free() -> int:
    """Bytes free in the shared memory file system (0 when it cannot be told)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_dead_blocks() -> list[tuple[str, int]]:
    """Unlink the blocks whose producer (the pid in the name) is no longer running: what
    a recorder whose whole process group was SIGKILLed (its resource tracker with it)
    left. A storage process that outlived its producer keeps its mappings (only the
    name goes) and finds the name gone when it unlinks, which it ignores. Returns
    ``(name, bytes)`` of each block removed."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return []
    removed = []
    for name in names:
        m = _NAME.fullmatch(name)
        if m is None or _alive(int(m[1])):
            continue
        path = os.path.join(SHM_DIR, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            os.unlink(path)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
        removed.append((name, st.st_size))
    return removed


def _create(name: str, size: int) -> mmap.mmap:
    """A new block of ``size`` bytes with every page reserved (``SharedMemoryFull`` when
    they do not fit), mapped, and registered with this process's resource tracker (the
    safety net when both processes die) as ``SharedMemory`` would."""
    path = os.path.join(SHM_DIR, name)
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise SharedMemoryFull(size, shm_free(), SHM_DIR) from None
        mapping = mmap.mmap(fd, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    resource_tracker.register("/" + name, "shared_memory")
    return mapping


class Counter(IntEnum):
    """The ``Control`` counters; the storage process writes them, the producer reads."""

    PIPE_READ = 0  # bytes read off the command pipe
    WEIGHT_COMMITTED = 1  # sink queue weight committed (rows, one per other event)
    FRAMES_RELEASED = 2  # ring slots freed (frames written)
    BYTES_RELEASED = 3  # raw bytes of those frames
    BYTES_OUT = 4
    CHUNKS_WRITTEN = 5
    SEGMENTS_SEALED = 6
    CURRENT_SEGMENT = 7  # +1; 0: none
    FLUSH_US = 8
    MAX_FLUSH_US = 9
    STEPS_COMMITTED = 10
    EVENTS_COMMITTED = 11
    BATCHES = 12
    SINK_FLUSH_US = 13
    SINK_MAX_FLUSH_US = 14
    CHECKPOINTS = 15


class _Block:
    """One shared memory block with a single numpy view over it (views handed out are
    slices of that view, so closing needs no other export released).

    The producer creates blocks in ``/dev/shm`` with their pages reserved (``_create``;
    registered with its resource tracker like ``SharedMemory`` does: the safety net if
    both processes die). The storage process maps them straight from ``/dev/shm``
    (Linux), so attaching never registers them a second time and a storage process
    never unregisters what the producer registered.
    """

    def __init__(self, name: str, size: int, create: bool):
        self.name = name
        self.owner = create
        if create:
            self._mmap: mmap.mmap | None = _create(name, size)
        else:
            fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_NOFOLLOW)
            try:
                self._mmap = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        self.size = size
        self._array: np.ndarray | None = np.ndarray(size, dtype=np.uint8, buffer=self._mmap)

    @property
    def array(self) -> np.ndarray:
        assert self._array is not None, "shared memory block is closed"
        return self._array

    def close(self) -> bool:
        """Unmap; False when a view is still referenced (the mapping then lives until
        the process exits)."""
        self._array = None
        try:
            if self._mmap is not None:
                self._mmap.close()
        except BufferError:
            _kept.append(self)  # never garbage-collected while views live
            return False
        return True

    def unlink(self) -> None:
        """Remove the name (the memory goes once every process has unmapped it). The
        creator unregisters it from its tracker; a storage process only removes it."""
        try:
            os.unlink(os.path.join(SHM_DIR, self.name))
        except FileNotFoundError:
            pass  # removed as a dead producer's (remove_dead_blocks) meanwhile
        if self.owner:
            resource_tracker.unregister("/" + self.name, "shared_memory")


_kept: list[_Block] = []


class Control(_Block):
    """The counters block."""

    SIZE = _ALIGN * 4

    @classmethod
    def create(cls) -> Control:
        return cls(_new_name(), cls.SIZE, create=True)

    @classmethod
    def attach(cls, name: str) -> Control:
        return cls(name, cls.SIZE, create=False)

    def __init__(self, name: str, size: int, create: bool):
        super().__init__(name, size, create)
        self.values = self.array[: len(Counter) * 8].view(np.int64)
        #: The same counters as a memoryview: indexing it gives a Python int, several
        #: times cheaper than a numpy scalar (the producer reads them every step).
        self.counts = self.values.data

    def close(self) -> bool:
        self.counts.release()
        self.values = np.zeros(len(Counter), dtype=np.int64)  # reads after close: zeros
        self.counts = self.values.data
        return super().close()


def slot_geometry(nbytes: int, queue_frames: int, queue_bytes: int) -> tuple[int, int]:
    """``(slot_bytes, slots)`` for frames of ``nbytes``: slots aligned to 64 bytes, as
    many as the queue's bounds allow (at least one)."""
    slot_bytes = max(_ALIGN, -(-nbytes // _ALIGN) * _ALIGN)
    return slot_bytes, max(1, min(queue_frames, queue_bytes // slot_bytes))


class FrameRing(_Block):
    """Frame slots: ``slots`` state bytes (padded to 64), then the slots."""

    @classmethod
    def create(cls, slot_bytes: int, slots: int) -> FrameRing:
        return cls(_new_name(), slot_bytes, slots, create=True)

    @classmethod
    def attach(cls, name: str, slot_bytes: int, slots: int) -> FrameRing:
        return cls(name, slot_bytes, slots, create=False)

    @staticmethod
    def _header(slots: int) -> int:
        return -(-slots // _ALIGN) * _ALIGN

    def __init__(self, name: str, slot_bytes: int, slots: int, create: bool):
        super().__init__(name, self._header(slots) + slot_bytes * slots, create)
        self.slot_bytes = slot_bytes
        self.slots = slots
        self.states = self.array[:slots]
        self._base = self._header(slots)
        self._views: list[np.ndarray | None] = [None] * slots

    def view(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        """The slot as a uint8 array of ``shape`` (cached: frames keep their shape)."""
        v = self._views[slot]
        if v is None or v.shape != shape:
            start = self._base + slot * self.slot_bytes
            n = 1
            for d in shape:
                n *= d
            v = self._views[slot] = self.array[start : start + n].reshape(shape)
        return v

    def free_slots(self, limit: int) -> list[int]:
        """The ``limit`` lowest slots whose state is 0, highest first (``pop()`` takes
        the lowest)."""
        return np.flatnonzero(self.states == 0)[:limit][::-1].tolist()

    def close(self) -> bool:
        self._views = []
        self.states = np.empty(0, dtype=np.uint8)
        return super().close()
