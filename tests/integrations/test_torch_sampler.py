"""framestore.torch.ChunkShuffleSampler: a shuffled epoch that yields every item of a
StepDataset exactly once, draws a few chunks at a time (so each chunk is decoded once
where a plain RandomSampler decodes it again and again), is reproducible from a seeded
generator, and works through DataLoader workers bit-exactly. Real Assault frames."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the torch extra (CI installs torch==2.13.0, CPU)

from conftest import record_episodes  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from framestore import FrameStore  # noqa: E402
from framestore.errors import InvalidInput  # noqa: E402
from framestore.torch import (  # noqa: E402
    ChunkShuffleSampler,
    IterableStepDataset,
    StepDataset,
    collate_steps,
)

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

CHUNK = 8  # frames a chunk
FRAME_BYTES = 210 * 160 * 3
#: zstd chunks of 8 frames, one part each: a decode is a whole chunk
OVERRIDES = {"codec": "zstd", "chunk_frames": CHUNK, "part_frames": 0, "segment_bytes": 1 << 20}


@pytest.fixture
def store(tmp_path, assault_frames):
    path = tmp_path / "s.store"
    record_episodes(path, assault_frames, episodes=4, steps=30, overrides=OVERRIDES)
    return path


def _chunk_of(ds: StepDataset) -> list[tuple[int, int, int]]:
    """Each item's chunk, from the episodes' pointers (what the test knows independently
    of the sampler: the frame's segment and chunk offset)."""
    out = []
    for i in range(len(ds)):
        item = ds[i]
        with FrameStore.open(ds.locations[int(item["store"])], readonly=True) as st:
            seg, off, _slot = st.frame_locations(int(item["episode"]))[int(item["step"])][1]
        out.append((int(item["store"]), seg, off))
    return out


def test_every_item_once_per_epoch_in_chunk_windows(store):
    with StepDataset(store) as ds:
        n = len(ds)
        chunk_of = _chunk_of(ds)
        sampler = ChunkShuffleSampler(ds, chunks=2)
        assert len(sampler) == n == 120
        epochs = [list(sampler) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(n))  # every item exactly once
        assert order != list(range(n))
    assert epochs[0] != epochs[1] != epochs[2]
    # a chunk's items come within one window of 2 chunks: at most 2 * 8 - 1 apart
    for order in epochs:
        first: dict = {}
        last: dict = {}
        for pos, i in enumerate(order):
            first.setdefault(chunk_of[i], pos)
            last[chunk_of[i]] = pos
        assert max(last[c] - first[c] for c in first) < 2 * CHUNK
        # and the chunks themselves come in a shuffled order, not the store's
        chunks_in_order = sorted(first, key=first.get)
        assert chunks_in_order != sorted(first)


def test_a_seeded_generator_gives_the_same_epochs(store):
    with StepDataset(store) as ds:
        a = ChunkShuffleSampler(ds, generator=torch.Generator().manual_seed(7))
        b = ChunkShuffleSampler(ds, generator=torch.Generator().manual_seed(7))
        c = ChunkShuffleSampler(ds, generator=torch.Generator().manual_seed(8))
        a_epochs = [list(a), list(a)]
        assert a_epochs == [list(b), list(b)]
        assert a_epochs[0] != a_epochs[1]
        assert list(c) != a_epochs[0]


def test_a_shuffled_epoch_decodes_each_chunk_once_where_random_sampling_repeats(store):
    """With a cache of 3 chunks, a window of 2 chunks is decoded once each; a plain
    RandomSampler over the same items decodes chunks again and again (counted by the
    reader's decode counter, not timed)."""

    def decodes(sampler_of) -> tuple[int, int]:
        with StepDataset(store, cache_bytes=3 * CHUNK * FRAME_BYTES) as ds:
            chunks = len(set(_chunk_of(ds)))
            reader = ds.stores.get(0).reader
            before = reader.chunks_decoded
            for i in sampler_of(ds):
                ds[i]
            return reader.chunks_decoded - before, chunks

    gen = torch.Generator().manual_seed(1)
    ours, chunks = decodes(lambda ds: ChunkShuffleSampler(ds, chunks=2, generator=gen))
    plain, _ = decodes(lambda ds: RandomSampler(ds, generator=torch.Generator().manual_seed(1)))
    assert ours == chunks
    assert plain > 3 * chunks


@pytest.mark.parametrize("workers", [0, 2])
def test_through_a_dataloader_every_frame_bit_exact(store, workers):
    want = {}
    with FrameStore.open(store, readonly=True) as st:
        for ep in st.episodes():
            for step, frame in st.iter_steps_frames(ep.id):
                want[(ep.id, step)] = frame
    with StepDataset(store) as ds:
        sampler = ChunkShuffleSampler(ds, generator=torch.Generator().manual_seed(3))
        loader = DataLoader(ds, batch_size=16, sampler=sampler, num_workers=workers,
                            collate_fn=collate_steps)  # fmt: skip
        got = {}
        order = []
        for batch in loader:
            for e, t, frame in zip(batch["episode"], batch["step"], batch["render"], strict=True):
                key = (int(e), int(t))
                assert key not in got, f"{key} twice"
                got[key] = frame.numpy()
                order.append(key)
        assert got.keys() == want.keys()
        for key, frame in want.items():
            np.testing.assert_array_equal(got[key], frame, err_msg=str(key))
        # the loader's order is the sampler's (same seed, same first epoch)
        again = ChunkShuffleSampler(ds, generator=torch.Generator().manual_seed(3))
        assert order == [(int(ds[i]["episode"]), int(ds[i]["step"])) for i in again]


def _worker_collate(items):
    """``collate_steps`` plus the id of the DataLoader worker that made the batch."""
    from torch.utils.data import get_worker_info

    batch = collate_steps(items)
    batch["worker"] = torch.tensor(get_worker_info().id)
    return batch


def test_told_the_loaders_workers_each_chunk_goes_to_one_worker(store):
    """With ``batch_size`` and ``workers`` the sampler deals its batches as the
    DataLoader hands them out: every chunk is served by one worker (but those of the
    window cut where one worker's run of batches ends); without, most chunks are read
    by both workers. Every item still once."""
    with StepDataset(store) as ds:
        chunk_of = _chunk_of(ds)
        where = {(e, t): i for i, (e, t) in enumerate(
            (int(ds[i]["episode"]), int(ds[i]["step"])) for i in range(len(ds))
        )}  # fmt: skip

        def split_chunks(**told) -> int:
            gen = torch.Generator().manual_seed(5)
            sampler = ChunkShuffleSampler(ds, chunks=2, generator=gen, **told)
            loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=2,
                                collate_fn=_worker_collate)  # fmt: skip
            served: dict = {}
            seen = []
            for batch in loader:
                for e, t in zip(batch["episode"], batch["step"], strict=True):
                    i = where[(int(e), int(t))]
                    seen.append(i)
                    served.setdefault(chunk_of[i], set()).add(int(batch["worker"]))
            assert sorted(seen) == list(range(len(ds)))
            return sum(len(w) > 1 for w in served.values())

        assert split_chunks(batch_size=8, workers=2) <= 2  # one window cut at most
        assert split_chunks() > 10  # of 15 chunks


def test_values_only_and_named_streams(tmp_path, assault_frames):
    """A dataset of values only is shuffled item by item; one of a named stream groups
    by that stream's chunks."""
    path = tmp_path / "o.store"
    with FrameStore.open(path) as st:
        with st.recorder("ALE/Assault-v5", overrides=OVERRIDES) as rec:
            rec.begin_episode(seed=1)
            for i in range(40):
                small = assault_frames[i][::5, ::5, 0].copy()  # a (42, 32) "observation"
                rec.record_step(frames={"render": assault_frames[i], "observation": small})
            rec.end_episode()
    with StepDataset(path, streams=()) as ds:
        order = list(ChunkShuffleSampler(ds, generator=torch.Generator().manual_seed(0)))
        assert sorted(order) == list(range(40)) and order != list(range(40))
    with StepDataset(path, streams="observation") as ds:
        keys = ds.chunk_keys()
        assert len({tuple(k) for k in keys}) == 40 // CHUNK
        order = list(ChunkShuffleSampler(ds, chunks=1))
        assert sorted(order) == list(range(40))
        runs = [order[i : i + CHUNK] for i in range(0, 40, CHUNK)]
        assert all(max(r) - min(r) == CHUNK - 1 for r in runs)  # one chunk at a time


def test_bad_arguments_are_one_clear_error(store):
    with StepDataset(store) as ds:
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(InvalidInput, match="chunks must be an integer"):
                ChunkShuffleSampler(ds, chunks=bad)
        with pytest.raises(InvalidInput, match="workers must be an integer"):
            ChunkShuffleSampler(ds, workers=-1)
        with pytest.raises(InvalidInput, match="batch_size must be None or at least 1"):
            ChunkShuffleSampler(ds, batch_size=0, workers=2)
        with pytest.raises(InvalidInput, match="workers needs the DataLoader's batch_size"):
            ChunkShuffleSampler(ds, workers=2)
    with IterableStepDataset(store) as it:
        with pytest.raises(InvalidInput, match="samples a StepDataset"):
            ChunkShuffleSampler(it)
