"""An in-order pass of ``IterableStepDataset(batch_size=B)``: frames are decoded straight
into batch slots that each process reuses, handed from DataLoader workers to the main
process as handles (framestore/torch/_handover.py). Every frame stays bit-exact, and a
slot is never refilled while any tensor of the batch it held is alive."""

from __future__ import annotations

import gc

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the torch extra (CI installs torch==2.13.0, CPU)

from conftest import record_episodes  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from framestore import FrameStore  # noqa: E402
from framestore.torch import IterableStepDataset, collate_steps  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

#: Chunks of 20 frames in zstd parts of 6: batches of 8 start and end inside parts, and
#: runs cross chunk and episode boundaries.
PARTS = {"codec": "zstd", "chunk_frames": 20, "part_frames": 6}
BATCH = 8


@pytest.fixture(scope="module")
def parted(tmp_path_factory, assault_frames):
    path = tmp_path_factory.mktemp("batches") / "runs.store"
    record_episodes(path, assault_frames, episodes=4, steps=45, overrides=PARTS)
    want = {}
    with FrameStore.open(path, readonly=True) as st:
        for ep in st.episodes():
            for step, frame in st.iter_steps_frames(ep.id, copy=True):
                want[(ep.id, step)] = frame
    return path, want


def check(batch, want) -> int:
    """Assert every frame of ``batch`` is the stored one; the number of frames."""
    for e, s, frame in zip(batch["episode"], batch["step"], batch["render"], strict=True):
        np.testing.assert_array_equal(frame.numpy(), want[(int(e), int(s))])
    return len(batch["step"])


def pointer(batch) -> int:
    return batch["render"].data_ptr()


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_batches_in_order_are_bit_exact_and_their_slots_reused(parted, workers):
    path, want = parted
    with IterableStepDataset(path, batch_size=BATCH) as ds:
        seen, pointers = 0, []
        for batch in DataLoader(ds, batch_size=None, num_workers=workers):
            seen += check(batch, want)
            pointers.append(pointer(batch))
            del batch  # the slot can be refilled
    assert seen == len(want)
    # A few slots per process serve every batch (not new memory per batch).
    assert len(set(pointers)) <= 6 * max(workers, 1) and len(set(pointers)) < len(pointers), (
        len(set(pointers)),
        len(pointers),
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_still_held_never_change_while_later_ones_are_read(parted, workers):
    path, want = parted
    with IterableStepDataset(path, batch_size=BATCH) as ds:
        for epoch in range(2):
            held, views, live, reused = [], [], set(), 0
            for i, batch in enumerate(DataLoader(ds, batch_size=None, num_workers=workers)):
                assert pointer(batch) not in live, "a slot was refilled while its batch was held"
                if i % 3 == 0:  # kept whole (a training loop holding a few batches)
                    held.append((batch, {k: v.clone() for k, v in batch.items()}))
                    live.add(pointer(batch))
                elif i % 3 == 1 and len(batch["step"]) > 2:  # one frame's view outlives it
                    key = (int(batch["episode"][2]), int(batch["step"][2]))
                    views.append((batch["render"][2], key))
                    live.add(pointer(batch))
                else:
                    reused += 1
                del batch
                gc.collect()
            assert views and reused
            for batch, copy in held:
                for key in batch:
                    assert torch.equal(batch[key], copy[key]), (epoch, key)
                check(batch, want)
            for frame, key in views:
                np.testing.assert_array_equal(frame.numpy(), want[key])


def test_a_loop_that_holds_every_batch_gets_new_memory_when_the_slots_run_out(parted):
    path, want = parted
    with IterableStepDataset(path, batch_size=BATCH) as ds:
        held = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert len({pointer(b) for b in held}) == len(held)
    assert sum(check(b, want) for b in held) == len(want)


def test_a_collate_function_that_rebuilds_the_batch_still_reads_bit_exact(parted):
    # The batch's tensors leave the worker without its handover: PyTorch copies them,
    # and the slot they were in is never refilled.
    path, want = parted
    with IterableStepDataset(path, batch_size=BATCH) as ds:
        loader = DataLoader(
            ds, batch_size=None, num_workers=2, collate_fn=lambda b: {k: v for k, v in b.items()}
        )
        held = []
        for batch in loader:
            check(batch, want)
            held.append(batch)
    assert sum(check(b, want) for b in held) == len(want)


def test_collate_steps_and_pytorchs_default_conversion_give_the_same_batches(parted):
    path, want = parted
    with IterableStepDataset(path, batch_size=BATCH, fields=("action",)) as ds:
        ours = [
            {k: v.clone() for k, v in b.items()}
            for b in DataLoader(ds, batch_size=None, num_workers=2, collate_fn=collate_steps)
        ]
        theirs = [
            {k: v.clone() for k, v in b.items()}
            for b in DataLoader(ds, batch_size=None, num_workers=2)
        ]
        here = [{k: v.clone() for k, v in b.items()} for b in ds]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys() == {"render", "action", "episode", "step", "store"}
        for key in a:
            assert torch.equal(a[key], b[key]), key

    # In this process (other batch boundaries and order than two workers'): the same items.
    def rows(batches):
        return sorted(
            (int(e), int(s), int(a), f.numpy().tobytes())
            for b in batches
            for e, s, a, f in zip(b["episode"], b["step"], b["action"], b["render"], strict=True)
        )

    assert here[0].keys() == ours[0].keys()
    assert all(ours[0][key].dtype == here[0][key].dtype for key in ours[0])
    assert rows(ours) == rows(here)
    assert sum(check(b, want) for b in here) == len(want)


def test_persistent_workers_read_every_epoch_bit_exact(parted):
    path, want = parted
    with IterableStepDataset(path, batch_size=BATCH) as ds:
        loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
        for _epoch in range(3):
            assert sum(check(b, want) for b in loader) == len(want)
        del loader


def test_persistent_workers_left_early_every_epoch_keep_no_mappings_behind(parted):
    """A loop that stops after one batch (an early-stopped validation pass) never gets
    its pass's last batch: the next pass of the same worker ends that pass's mappings
    and pipe, so epochs do not pile up open descriptors (found in review: ~7 per epoch)."""
    import os

    from framestore.torch import _handover

    path, want = parted
    with IterableStepDataset(path, batch_size=BATCH) as ds:
        loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
        counts = []
        for _epoch in range(8):
            for batch in loader:
                check(batch, want)
                break
            del batch
            gc.collect()
            counts.append((len(_handover._RECEIVED), len(os.listdir("/proc/self/fd"))))
        assert sum(check(b, want) for b in loader) == len(want)  # a whole epoch still reads
        del loader
    assert all(passes <= 2 for passes, _fds in counts), counts
    fds = [f for _passes, f in counts[1:]]
    assert max(fds) - min(fds) <= 4, counts  # steady (a descriptor or two come and go)


class _InWorker(torch.utils.data.IterableDataset):
    """Consumes the dataset's batches inside each DataLoader worker (never pickled) and
    yields what it saw: (episode, step, frame) rows and the batches' data pointers."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        rows, pointers = [], []
        for batch in self.dataset:
            pointers.append(pointer(batch))
            for e, s, f in zip(batch["episode"], batch["step"], batch["render"], strict=True):
                rows.append((int(e), int(s), f.numpy().tobytes()))
            del batch
        yield {"rows": rows, "pointers": pointers}


def test_batches_consumed_inside_a_worker_free_their_slots(parted):
    path, want = parted
    with IterableStepDataset(path, batch_size=BATCH) as ds:
        loader = DataLoader(_InWorker(ds), batch_size=None, num_workers=2, collate_fn=lambda b: b)
        seen = list(loader)
    rows = [r for s in seen for r in s["rows"]]
    assert sorted(rows) == sorted((e, s, f.tobytes()) for (e, s), f in want.items())
    for s in seen:  # each batch was dropped once the next was made: two slots served all
        assert len(s["pointers"]) > 4 and len(set(s["pointers"])) <= 2


@pytest.mark.parametrize(
    "overrides",
    [
        {"codec": "raw", "chunk_frames": 4, "segment_bytes": 1 << 20},  # not zstd
        {"codec": "zstd", "chunk_frames": 7, "segment_bytes": 1 << 20},  # one zstd frame
    ],
    ids=["raw", "zstd-unparted"],
)
def test_batches_in_order_from_chunks_without_parts_are_bit_exact(
    tmp_path, assault_frames, overrides
):
    path = tmp_path / "s.store"
    record_episodes(path, assault_frames, episodes=3, steps=23, overrides=overrides)
    with FrameStore.open(path, readonly=True) as st:
        want = {
            (ep.id, step): frame
            for ep in st.episodes()
            for step, frame in st.iter_steps_frames(ep.id, copy=True)
        }
    with IterableStepDataset(path, batch_size=BATCH) as ds:
        for workers in (0, 2):
            loader = DataLoader(ds, batch_size=None, num_workers=workers)
            assert sum(check(b, want) for b in loader) == len(want)
