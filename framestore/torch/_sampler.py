"""``ChunkShuffleSampler``: a shuffled epoch of a ``StepDataset`` whose consecutive items
share decoded chunks (the idea of TorchRL's ``SliceSampler``: sample what is stored
together, together).

A plain ``RandomSampler`` sends every item to a random chunk: with chunks of 64 frames,
an item's decoded part is rarely still cached when a neighbour comes, so each item pays
a decode of its zstd part. Here the items are grouped by the chunk holding their frame
(the first stream the dataset returns; the episode when it returns none), the groups are
shuffled, and the items of every ``chunks`` consecutive groups are shuffled together:
each epoch still yields every item exactly once in a random order, but a DataLoader's
batches draw from a few chunks at a time, and each of those is decoded once per worker
and then served from the cache (keep ``chunks`` chunks of decoded frames within the
dataset's ``cache_bytes``). The price: items of one window are correlated (they come
from ``chunks`` stretches of episodes); a larger ``chunks`` mixes more.

Told the DataLoader's ``batch_size`` and ``num_workers`` (``workers``), it also keeps
each chunk to ONE worker: a DataLoader hands batch k to worker k mod W (round robin,
from worker 0 each epoch, with its default ``in_order=True``), so the sampler cuts its
order into batches, gives each worker a contiguous run of them and interleaves the runs
as the DataLoader deals them out. Where the assumption does not hold (other arguments,
another loader), the order is still a shuffled epoch with every item once; only the
decodes are shared less.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import InvalidInput
from ._datasets import StepDataset

__all__ = ["ChunkShuffleSampler"]


class ChunkShuffleSampler(Sampler[int]):
    """Indices of a ``StepDataset``, each once per epoch, shuffled chunk-wise.

    Use it as a DataLoader's sampler in place of ``shuffle=True``: ``DataLoader(ds,
    batch_size=64, num_workers=2, sampler=ChunkShuffleSampler(ds, batch_size=64,
    workers=2), collate_fn=collate_steps)``.

    Args:
        dataset: the ``StepDataset`` to sample.
        chunks: how many chunks' items are shuffled together (the window; at least 1).
        batch_size, workers: the DataLoader's ``batch_size`` and ``num_workers``: with
            2 or more workers each chunk's items go to one worker (module docstring).
        generator: a ``torch.Generator`` for the order (as ``RandomSampler`` takes one):
            the same seed gives the same order, epoch after epoch; None: a fresh seed
            from torch's global generator each epoch.

    Raises:
        InvalidInput: ``chunks`` below 1, ``workers`` below 0, ``batch_size`` below 1,
            ``workers`` above 1 without ``batch_size``, or a dataset that is not a
            ``StepDataset``.
    """

    def __init__(
        self,
        dataset: StepDataset,
        *,
        chunks: int = 4,
        batch_size: int | None = None,
        workers: int = 0,
        generator: torch.Generator | None = None,
    ):
        if not isinstance(dataset, StepDataset):
            raise InvalidInput(
                f"ChunkShuffleSampler samples a StepDataset, not {type(dataset).__name__}"
            )
        for name, value, least in (("chunks", chunks, 1), ("workers", workers, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InvalidInput(f"{name} must be an integer of at least {least}, got {value!r}")
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise InvalidInput(f"batch_size must be None or at least 1, got {batch_size!r}")
        if workers > 1 and batch_size is None:
            raise InvalidInput("workers needs the DataLoader's batch_size too")
        self.chunks = chunks
        self.batch_size = batch_size
        self.workers = workers
        self.generator = generator
        self._groups = _groups(dataset.chunk_keys())

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[int]:
        n = len(self._groups)
        if n == 0:
            return iter(())
        g = self.generator
        if g is None:
            g = torch.Generator()
            g.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        count = int(self._groups[-1]) + 1
        position = torch.randperm(count, generator=g).numpy()
        window = position[self._groups] // self.chunks
        tie = torch.rand(n, generator=g, dtype=torch.float64).numpy()
        order = np.lexsort((tie, window))  # by window, randomly within it
        if self.workers > 1 and self.batch_size is not None:
            order = _dealt(order, self.batch_size, self.workers)
        return iter(order.tolist())


def _dealt(order: np.ndarray, batch: int, workers: int) -> np.ndarray:
    """``order`` cut into batches and dealt as a DataLoader deals them out (batch k to
    worker k mod ``workers``) so that each worker's batches are one contiguous run of
    them; the run of the worker that gets the last (short) batch comes last, so that
    batch stays last."""
    batches = [order[i : i + batch] for i in range(0, len(order), batch)]
    m = len(batches)
    last = (m - 1) % workers
    runs, start = {}, 0
    for w in ((last + 1 + j) % workers for j in range(workers)):
        count = (m - w + workers - 1) // workers  # positions k < m with k % workers == w
        runs[w] = iter(batches[start : start + count])
        start += count
    return np.concatenate([next(runs[k % workers]) for k in range(m)])


def _groups(keys: np.ndarray) -> np.ndarray:
    """The group of each item: items in dataset order whose key rows (``(n, k)``) equal
    the previous item's share its group (a chunk's items are consecutive)."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    return np.cumsum(new) - 1
