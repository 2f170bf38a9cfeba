"""PyTorch datasets over framestore stores (the ``torch`` extra:
``pip install 'framestore[torch]'``; docs/RL.md, "Training from a store with PyTorch").

- ``StepDataset``: map-style steps, dicts of tensors keyed by stream and field, with
  windows of neighbouring steps (frame stacks, action chunks) padded at episode
  boundaries and ``<key>_is_pad`` masks;
- ``IterableStepDataset``: the same items as one pass in chunk order, each DataLoader
  worker walking its share, with a bounded shuffle buffer; whole batches in order are
  decoded into reused batch slots handed from workers as handles;
- ``TransitionDataset``: ``(obs, action, reward, next_obs, terminated, truncated)``;
- ``collate_steps``: batches of uint8 frames with one copy, into shared memory in workers;
- ``ChunkShuffleSampler``: a shuffled epoch of a ``StepDataset`` that draws a few chunks
  at a time, so consecutive items share decoded chunks.

Every dataset reads the episodes' frame pointers and step values once when it is made
(no SQLite query per item); each DataLoader worker opens the stores itself, read-only,
by location (a directory or a published store's URL) and keeps decoded chunks within a
byte budget. Importing this package imports torch; nothing else in framestore does.

May import: ``framestore.store`` and everything below it (it is on the top layer).
"""

from ..extras import require

require("torch", extra="torch", what="framestore.torch")

from ._datasets import (  # noqa: E402  (after the install hint)
    IterableStepDataset,
    StepDataset,
    TransitionDataset,
    collate_steps,
)
from ._episodes import FIELDS, STREAMS  # noqa: E402
from ._sampler import ChunkShuffleSampler  # noqa: E402

__all__ = [
    "FIELDS",
    "ChunkShuffleSampler",
    "STREAMS",
    "IterableStepDataset",
    "StepDataset",
    "TransitionDataset",
    "collate_steps",
]
