"""Batch memory the iterable dataset reuses, and how a batch crosses from a DataLoader
worker to the main process without new shared memory per batch.

PyTorch hands a worker's tensors over by moving each one into new shared memory and
passing its descriptor over a socket, once per tensor and batch: for 256 Assault frames
that is 25 MB of fresh pages per batch, which costs more CPU than decoding the frames
(docs/BENCHMARKS.md). Here each process keeps a few *slots* of memory and fills each
batch into a free one, frames decoded straight into it. In a DataLoader worker a slot is
a memfd both processes map once; what crosses the worker's queue is a ``Handover``
(a ``dict`` of the batch's tensors in the worker) that pickles to a handle: the slot's
number and the tensors' layout (and, the first time in a pass, the slot's descriptor).

The one rule, and how it holds: **a slot is refilled only once no tensor of the batch it
held is alive.**

1. A process takes a slot only when the slot's flag (its first byte) is 0, and sets it to
   1 before filling it.
2. The flag goes back to 0 only when the last tensor of that batch is freed where the
   batch was delivered: its tensors are views of one array made for that batch alone
   (``torch.from_numpy``), whose finalizer clears the flag (a count per slot, should one
   handle be delivered twice). Copies (``pin_memory``, ``.clone()``, moving a tensor to
   another process) own their memory; views and ``.numpy()`` keep the array alive.
3. A batch filled in a worker but never pickled whole (consumed in the worker, or its
   tensors put in another dict by a collate function) frees its slot the same way, once
   its tensors in the worker are all gone; they are not PyTorch shared memory, so
   PyTorch copies any it sends into memory of its own.
4. No free slot (the consumer holds them all, e.g. ``list(loader)``): the batch goes into
   new memory, as PyTorch's own path would.

A worker's slots count against the dataset's ``cache_bytes`` (an in-order pass keeps no
decoded chunks). Each pass has its own token; the main process maps a slot the first
time a pass hands it over and drops the pass's mappings after its last batch, or once
the worker has exited (a pipe whose write end only the worker holds reads as closed),
whichever comes first; batches still held keep theirs.
"""

from __future__ import annotations

import mmap
import os
import select
import threading
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.reduction import DupFd
from typing import Any

import numpy as np
import torch

#: Bytes before a slot's data: its flag (byte 0), padded so the data stays aligned.
HEADER = 64
#: Slots per process at most: the batches a DataLoader keeps in flight per worker
#: (``prefetch_factor``, 2 by default), the one being filled, and the one or two the
#: training loop still holds.
MAX_SLOTS = 6

#: ``{name: (shape, dtype)}``: the tensors of a batch, in order.
Layout = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


def _placed(layout: Layout) -> list[tuple[str, int, int, tuple[int, ...], torch.dtype]]:
    """``(name, offset, nbytes, shape, dtype)`` of each tensor in a slot, 64-aligned."""
    out, at = [], 0
    for name, (shape, dtype) in layout.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        out.append((name, at, nbytes, tuple(shape), dtype))
        at += -(-nbytes // HEADER) * HEADER
    return out


def _tensors(data: np.ndarray, placed) -> dict[str, torch.Tensor]:
    """The batch's tensors as views of ``data`` (a flat uint8 array)."""
    base = torch.from_numpy(data)
    return {
        name: base[at : at + nbytes].view(dtype).view(shape)
        for name, at, nbytes, shape, dtype in placed
    }


@dataclass
class _Slot:
    memory: np.ndarray  # flat uint8: the flag, then the data
    fd: int | None = None  # the memfd (a worker's slot)

    @property
    def free(self) -> bool:
        return self.memory[0] == 0


class _Mapped:
    """Slots as the consuming process sees them: their memory by number, and how many
    delivered batches of each are alive (the flag is cleared when none is)."""

    def __init__(self, alive: int | None = None, origin: str = ""):
        self.slots: dict[int, np.ndarray] = {}
        self.holders: dict[int, int] = {}
        self.alive = alive  # a worker's pipe, read end: readable once it exited
        self.origin = origin  # the worker's pool: one pass of it runs at a time

    def deliver(self, slot: int, placed, nbytes: int) -> dict[str, torch.Tensor]:
        lease = self.slots[slot][HEADER : HEADER + nbytes].view()  # this batch's own array
        self.holders[slot] = self.holders.get(slot, 0) + 1
        weakref.finalize(lease, self.release, slot)
        return _tensors(lease, placed)

    def release(self, slot: int) -> None:
        self.holders[slot] -= 1
        if not self.holders[slot]:
            self.slots[slot][0] = 0

    def exited(self) -> bool:
        return self.alive is not None and bool(select.select([self.alive], [], [], 0)[0])

    def forget(self) -> None:
        if self.alive is not None:
            os.close(self.alive)
            self.alive = None


#: The main process's mappings of its workers' slots, by pool token.
_RECEIVED: dict[str, _Mapped] = {}


def _receive(
    token: str,
    slot: int,
    nbytes: int,
    layout: tuple,
    memfd: Any,
    size: int,
    alive: Any,
    last: bool,
    origin: str,
) -> dict[str, torch.Tensor]:
    """Unpickling a ``Handover`` in the consuming process: the batch's tensors over this
    process's mapping of the slot. A pass's first batch ends the mappings of the same
    worker's earlier pass (a persistent worker whose loop was left early never sends
    that pass's last batch; batches still held keep their memory)."""
    for other in [
        t
        for t, m in _RECEIVED.items()
        if t != token and (m.exited() or (alive is not None and m.origin == origin))
    ]:
        _RECEIVED.pop(other).forget()
    mapped = _RECEIVED.get(token)
    if alive is not None:
        if mapped is not None:
            mapped.forget()
        mapped = _RECEIVED[token] = _Mapped(alive.detach(), origin)
    if mapped is None:
        raise RuntimeError(f"a batch in slot {slot} of a worker whose slots are unknown here")
    if memfd is not None:
        fd = memfd.detach()
        try:
            mapped.slots[slot] = np.frombuffer(mmap.mmap(fd, size), dtype=np.uint8)
        finally:
            os.close(fd)
    batch = mapped.deliver(slot, layout, nbytes)
    if last:
        _RECEIVED.pop(token, None)
        mapped.forget()
    return batch


class Handover(dict):
    """A batch filled into a worker's slot: a ``dict`` of its tensors there (what a
    collate function sees), which pickles to a handle (see the module docstring)."""

    def __init__(self, tensors: dict[str, torch.Tensor], pool: BatchPool, handle: _Handle):
        super().__init__(tensors)
        self._pool = pool
        self._handle = handle

    def __copy__(self) -> Handover:
        # PyTorch's default_convert copies a mutable mapping and updates the copy with
        # the same tensors: the batch stays one handover.
        return self

    def __reduce__(self):  # type: ignore[override]
        return _receive, self._pool.handed_over(self._handle)


@dataclass
class _Pass:
    """One pass (``__iter__``) of a worker's pool as the main process knows it: its own
    token, the slots whose descriptor went over, whether the pipe did."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    sent: set[int] = field(default_factory=set)
    alive_sent: bool = False


@dataclass
class _Handle:
    """A batch in a worker's slot, until it is pickled."""

    run: _Pass
    slot: int
    nbytes: int
    placed: list
    sent: bool = False  # pickled: the consumer releases the slot, not this process
    last: bool = False


class BatchPool:
    """The slots of one process (see the module docstring), up to ``max_bytes`` of them."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._reset()

    def _reset(self) -> None:
        self._slots: list[_Slot] = []
        self._local = _Mapped()
        self._pid = os.getpid()
        self._alive: tuple[int, int] | None = None  # pipe: read end sent, write end kept
        self._pass = _Pass()
        self._origin = uuid.uuid4().hex  # this process's pool, as the consumer knows it
        self._lock = threading.Lock()  # PyTorch's queue pickles in its feeder thread

    def start_pass(self) -> None:
        """A new pass (``__iter__``): the main process forgets a pass's slots after its
        last batch, so a pass has its own token and sends each slot's descriptor."""
        self._check_pid()
        self._pass = _Pass()

    def batch(self, layout: Layout, *, worker: bool) -> dict[str, torch.Tensor] | None:
        """Tensors of ``layout`` in a free slot (a ``Handover`` in a DataLoader worker),
        or None when no slot is free and no other fits in ``max_bytes``."""
        self._check_pid()
        placed = _placed(layout)
        nbytes = placed[-1][1] + placed[-1][2] if placed else 0
        if worker and not hasattr(os, "memfd_create"):
            return None  # no memfd (not Linux): PyTorch's own transport
        index = self._free(HEADER + nbytes, worker)
        if index is None:
            return None
        slot = self._slots[index]
        slot.memory[0] = 1
        if not worker:
            self._local.slots[index] = slot.memory
            return self._local.deliver(index, placed, nbytes)
        handle = _Handle(self._pass, index, nbytes, placed)
        # Never pickled (consumed in this worker, or its tensors copied into another
        # dict): the slot is free again once its tensors here are all gone.
        lease = slot.memory[HEADER : HEADER + nbytes].view()
        weakref.finalize(lease, _release_unsent, slot.memory, handle)
        return Handover(_tensors(lease, placed), self, handle)

    def handed_over(self, handle: _Handle) -> tuple:
        """What a ``Handover`` pickles to: the slot's descriptor and the pipe the first
        time in its pass, then the slot's number and the layout only."""
        with self._lock:
            handle.sent = True
            run = handle.run
            first = handle.slot not in run.sent
            run.sent.add(handle.slot)
            alive = None
            if not run.alive_sent:
                alive, run.alive_sent = DupFd(self._pipe()), True
        slot = self._slots[handle.slot]
        memfd = DupFd(slot.fd) if first else None
        size = slot.memory.nbytes
        return (
            run.token,
            handle.slot,
            handle.nbytes,
            handle.placed,
            memfd,
            size,
            alive,
            handle.last,
            self._origin,
        )

    @staticmethod
    def mark_last(batch: dict[str, torch.Tensor]) -> None:
        """Mark the last batch of a worker's pass: the main process then forgets the
        pass's mappings (batches it still holds keep their memory)."""
        if isinstance(batch, Handover):
            batch._handle.last = True

    def _free(self, nbytes: int, worker: bool) -> int | None:
        """A free slot of at least ``nbytes`` (the smallest), or a new one while the
        slots fit in ``max_bytes``. Slots are never dropped or renumbered: the main
        process knows them by number."""
        fits = [i for i, s in enumerate(self._slots) if s.free and s.memory.nbytes >= nbytes]
        if fits:
            return min(fits, key=lambda i: self._slots[i].memory.nbytes)
        held = sum(s.memory.nbytes for s in self._slots)
        if len(self._slots) >= MAX_SLOTS or held + nbytes > self.max_bytes:
            return None
        self._slots.append(self._new_slot(nbytes, worker))
        return len(self._slots) - 1

    @staticmethod
    def _new_slot(nbytes: int, worker: bool) -> _Slot:
        if not worker:
            return _Slot(np.zeros(nbytes, dtype=np.uint8))
        fd = os.memfd_create("framestore-batch", os.MFD_CLOEXEC)
        os.ftruncate(fd, nbytes)
        return _Slot(np.frombuffer(mmap.mmap(fd, nbytes), dtype=np.uint8), fd)

    def _pipe(self) -> int:
        if self._alive is None:
            self._alive = os.pipe()  # the write end stays open while this process lives
        return self._alive[0]

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # a forked worker: the parent's slots are not its own
            self._reset()


def _release_unsent(memory: np.ndarray, handle: _Handle) -> None:
    if not handle.sent:
        memory[0] = 0
