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

    Use it as a DataLoader's sampler (``DataLoader(ds, batch_size=64,
    sampler=ChunkShuffleSampler(ds), collate_fn=collate_steps, num_workers=2)``) in
    place of ``shuffle=True``.

    Args:
        dataset: the ``StepDataset`` to sample.
        chunks: how many chunks' items are shuffled together (the window; at least 1).
        generator: a ``torch.Generator`` for the order (as ``RandomSampler`` takes one):
            the same seed gives the same order, epoch after epoch; None: a fresh seed
            from torch's global generator each epoch.

    Raises:
        InvalidInput: ``chunks`` below 1, or a dataset that is not a ``StepDataset``.
    """

    def __init__(
        self,
        dataset: StepDataset,
        *,
        chunks: int = 4,
        generator: torch.Generator | None = None,
    ):
        if not isinstance(dataset, StepDataset):
            raise InvalidInput(
                f"ChunkShuffleSampler samples a StepDataset, not {type(dataset).__name__}"
            )
        if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
            raise InvalidInput(f"chunks must be an integer of at least 1, got {chunks!r}")
        self.chunks = chunks
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
        return iter(order.tolist())


def _groups(keys: np.ndarray) -> np.ndarray:
    """The group of each item: items in dataset order whose key rows (``(n, k)``) equal
    the previous item's share its group (a chunk's items are consecutive)."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    return np.cumsum(new) - 1
