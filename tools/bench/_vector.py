"""``framestore bench --envs N``: a vector environment of N real Assault copies stepped
with a seeded random policy, and three ways to record it, measured in ONE run with the
modes interleaved round by round (the median of each is reported, so a slow moment of a
shared machine hits every mode alike):

==================  ==========================================================================
``none``            ``step`` + ``render`` only: the environment's own speed
``record_steps``    one ``Recorder``: each vector step is one ``record_steps`` batch of N rows
``N recorders``     N stores, one ``Recorder`` each: N ``record_step`` calls per vector step
==================  ==========================================================================

With ``writers`` (``--writers``) the ``record_steps`` mode runs once per placement,
``record_steps/thread`` and ``record_steps/process`` (the frame writer and the SQLite
sink as threads of this process, or in a storage process), as extra rows interleaved
with the others. ``vector_mode`` (``--vector-mode``): ``sync`` steps the copies one
after another in this process; ``async`` in one worker process each.

Frames are handed over (``owned=True``) when two consecutive ``render()`` calls give
arrays that share no memory (ale-py's ``getScreenRGB()`` allocates each frame; an async
vector env unpickles them): what ``RecordVectorFrames`` hands over, without the copy.

steps/s counts environment steps (frames): N per vector step, from the first step until
everything is durable (the recorders closed). Producer cost is ``perf_counter_ns`` around
the recording work of one vector step (splitting infos, episode bookkeeping, the
recording calls), so it is per N frames. CPU per frame over the same span: ``cpu us/f``
every process (this one, an async env's workers, a storage process; user + system),
``rollout cpu us/f`` this process's main thread alone (stepping a sync env, and the
producer's share of recording). A mode's CPU over ``none``'s is what recording costs;
with every core busy (async on 2 cores), ``none``'s CPU / that sum bounds the ratio of
steps/s recording can reach.

``read_interleaved`` measures replay reading: one episode out of 16 recorded interleaved
(``record_steps``) against the same episode in a store of its own.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from framestore import FrameStore, Recorder
from framestore.envs import make_vec_env
from framestore.gym.play import load_policy, play_vector
from framestore.gym.vector import sub_env_infos

from ._frames import FrameSet
from ._measure import dir_bytes, percentiles_us

__all__ = [
    "READ_TABLE",
    "VECTOR_MODES",
    "VECTOR_TABLE",
    "ReadResult",
    "VectorResult",
    "read_interleaved",
    "run_vector",
]

MODES = ("none", "record_steps", "recorders")
#: With ``writers``: ``record_steps`` once per placement.
WRITER_MODES = ("none", "record_steps/thread", "record_steps/process", "recorders")
VECTOR_MODES = ("sync", "async")


@dataclass
class VectorResult:
    """One mode of the vector bench (medians over the rounds)."""

    mode: str
    envs: int
    vector_mode: str
    rounds: int
    frames: int  # per round
    steps_per_s: float = 0.0
    vs_none: float | None = None
    producer_p50_us: float = 0.0  # per vector step (N frames)
    producer_p99_us: float = 0.0
    cpu_us: float = 0.0  # CPU per frame, every process (workers, storage process)
    rollout_cpu_us: float = 0.0  # CPU per frame of this process's main thread
    bytes_per_frame: float = 0.0
    dropped: int = 0
    verified: bool | None = None  # every frame stored and read back (checksums, keys)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- recording
class _Batched:
    """The ``record_steps`` mode: one recorder, one batch per vector step."""

    def __init__(self, root: Path, env_id: str, n: int, space: Any, overrides: dict, owned: bool):
        self.stores = [FrameStore.open(root / "batched.store")]
        self.rec: Recorder = self.stores[0].recorder(
            env_id, action_space=space, overrides=overrides
        )
        self.ids = [self.rec.open_episode(seed=i, sub_env=i) for i in range(n)]
        self.owned = owned

    def first(self, frames) -> None:
        self.rec.record_steps(self.ids, frames, owned=self.owned)

    def record(self, frames, actions, rewards, term, trunc, infos, resets) -> None:
        n = len(self.ids)
        acts: Any = actions
        if resets.any():
            for i in np.flatnonzero(resets):
                self.ids[i] = self.rec.open_episode(sub_env=int(i))
            acts = [None if resets[i] else actions[i] for i in range(n)]
        self.rec.record_steps(
            self.ids, frames, acts, rewards, term, trunc, sub_env_infos(infos, n), owned=self.owned
        )
        for i in np.flatnonzero(np.logical_or(term, trunc)):
            self.rec.close_episode(self.ids[i])

    def close(self) -> int:
        dropped = self.rec.metrics().frames.frames_dropped
        self.rec.close()
        for st in self.stores:
            st.close()
        return dropped


class _Separate:
    """The ``N recorders`` mode: one store and recorder per sub-environment."""

    def __init__(self, root: Path, env_id: str, n: int, space: Any, overrides: dict, owned: bool):
        self.stores = [FrameStore.open(root / f"env{i}.store") for i in range(n)]
        self.recs = [
            st.recorder(env_id, action_space=space, overrides=overrides) for st in self.stores
        ]
        for i, rec in enumerate(self.recs):
            rec.begin_episode(seed=i)
        self.owned = owned

    def first(self, frames) -> None:
        for rec, f in zip(self.recs, frames, strict=True):
            rec.record_step(f, owned=self.owned)

    def record(self, frames, actions, rewards, term, trunc, infos, resets) -> None:
        per_info = sub_env_infos(infos, len(self.recs))
        for i, rec in enumerate(self.recs):
            if resets[i]:
                rec.begin_episode()
                rec.record_step(frames[i], info=per_info[i], owned=self.owned)
                continue
            rec.record_step(
                frames[i], actions[i], rewards[i], term[i], trunc[i], per_info[i], owned=self.owned
            )
            if term[i] or trunc[i]:
                rec.end_episode()

    def close(self) -> int:
        dropped = sum(r.metrics().frames.frames_dropped for r in self.recs)
        for rec in self.recs:
            rec.close()
        for st in self.stores:
            st.close()
        return dropped


def _verify(root: Path, frames: int) -> bool:
    """Every recorded frame is stored and reads back (checksums, keys) from every store."""
    stored = 0
    for path in sorted(root.glob("*.store")):
        with FrameStore.open(path, readonly=True) as st:
            for ep in st.episodes():
                stored += sum(1 for _ in st.iter_frames(ep.id))
    return stored == frames


def _fresh_renders(venv) -> bool:
    """Whether ``venv.render()`` gives new arrays each call (two calls' frames share no
    memory): then the bench hands them over, as ``RecordVectorFrames`` would."""
    first, second = venv.render(), venv.render()
    return all(
        isinstance(a, np.ndarray) and not np.shares_memory(a, b)
        for a, b in zip(first, second, strict=True)
    )


def _cpu_seconds(children: dict[int, Any]) -> float:
    """CPU seconds (user + system) of this process, its reaped children (a storage
    process, once closed) and its live children (an async env's workers, a running
    storage process; ``children`` keeps their ``psutil.Process`` by pid)."""
    import psutil

    me = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + reaped.ru_utime + reaped.ru_stime
    for child in psutil.Process().children(recursive=True):
        child = children.setdefault(child.pid, child)
        try:
            t = child.cpu_times()
        except psutil.Error:  # ended between the listing and the read
            continue
        total += t.user + t.system
    return total


def _placement(mode: str) -> dict[str, Any]:
    """The recorder overrides of ``mode`` (``record_steps/process``: the writer)."""
    _, _, writer = mode.partition("/")
    return {"writer": writer} if writer else {}


def _one_run(
    mode: str, venv, steps: int, seed: int, workdir: str | None, owned: bool = False
) -> dict[str, Any]:
    """``steps`` vector steps recorded (or not) as ``mode`` says."""
    n = venv.num_envs
    root = Path(tempfile.mkdtemp(prefix=f"fsbench-vector-{mode.replace('/', '-')}-", dir=workdir))
    try:
        play = play_vector(venv, load_policy("random").build(venv.action_space), seed)
        next(play)  # the reset
        frames0 = venv.render()
        kind = {"record_steps": _Batched, "recorders": _Separate}.get(mode.partition("/")[0])
        sink = None
        if kind is not None:
            space = venv.single_action_space
            sink = kind(root, "ALE/Assault-v5", n, space, _placement(mode), owned)
            sink.first(frames0)
        del frames0
        resets = np.zeros(n, dtype=bool)
        costs = np.empty(steps, dtype=np.int64)
        children: dict[int, Any] = {}
        cpu0, main0 = _cpu_seconds(children), time.thread_time()
        t0 = time.perf_counter()
        for k in range(steps):
            step = next(play)
            actions, rewards, infos = step.action, step.reward, step.info
            term, trunc = step.terminated, step.truncated
            frames = venv.render()
            c0 = time.perf_counter_ns()
            if sink is not None:
                sink.record(frames, actions, rewards, term, trunc, infos, resets)
            costs[k] = time.perf_counter_ns() - c0
            resets = np.logical_or(term, trunc)
        main = time.thread_time() - main0
        dropped = 0 if sink is None else sink.close()
        seconds = time.perf_counter() - t0
        cpu = _cpu_seconds(children) - cpu0
        total = n * (steps + 1)
        p50, p99, _mx = percentiles_us(costs)
        return {
            "steps_per_s": n * steps / seconds,
            "cpu_us": cpu / (n * steps) * 1e6,
            "rollout_cpu_us": main / (n * steps) * 1e6,
            "producer_p50_us": p50 if sink is not None else 0.0,
            "producer_p99_us": p99 if sink is not None else 0.0,
            "bytes_per_frame": dir_bytes(root) / total if sink is not None else 0.0,
            "dropped": dropped,
            "verified": None if sink is None else _verify(root, total - dropped),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_vector(
    envs: int = 8,
    *,
    steps: int = 300,
    rounds: int = 5,
    seed: int = 0,
    vector_mode: str = "sync",
    writers: bool = False,
    workdir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[VectorResult]:
    """Each mode ``rounds`` times on one vector env of ``envs`` Assault copies, the modes
    interleaved (their order rotates each round); medians of each. ``writers``:
    ``record_steps`` with the thread and with the process placement."""
    modes = WRITER_MODES if writers else MODES
    venv = make_vec_env("ALE/Assault-v5", envs, mode=vector_mode)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    errors: dict[str, str] = {}
    try:
        venv.reset(seed=seed)  # render() needs a reset first; every run resets again
        owned = _fresh_renders(venv)
        for r in range(rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for mode in order:
                if progress:
                    progress(f"vector ({vector_mode}) round {r + 1}/{rounds}: {mode}")
                try:
                    runs[mode].append(
                        _one_run(mode, venv, steps, seed + r, workdir and str(workdir), owned)
                    )
                except Exception as e:  # noqa: BLE001 - one broken mode must not end the bench
                    errors[mode] = f"{type(e).__name__}: {e}"
    finally:
        venv.close()
    return _summarise(runs, errors, envs, vector_mode, rounds, envs * (steps + 1))


_MEDIANS = (
    "steps_per_s", "producer_p50_us", "producer_p99_us", "cpu_us", "rollout_cpu_us",
    "bytes_per_frame",
)  # fmt: skip


def _summarise(
    runs: dict[str, list[dict[str, Any]]], errors: dict[str, str], envs: int, vector_mode: str,
    rounds: int, frames: int,
) -> list[VectorResult]:  # fmt: skip
    rows = []
    for mode in runs:
        label = f"{envs} recorders" if mode == "recorders" else mode
        row = VectorResult(label, envs, vector_mode, rounds, frames, error=errors.get(mode))
        done = runs[mode]
        if done:
            for key in _MEDIANS:
                setattr(row, key, statistics.median(d[key] for d in done))
            row.dropped = max(d["dropped"] for d in done)
            checks = [d["verified"] for d in done]
            row.verified = None if checks[0] is None else all(checks)
        rows.append(row)
    base = rows[0].steps_per_s
    for row in rows:
        row.vs_none = row.steps_per_s / base if base else None
    return rows


VECTOR_TABLE = (
    ("mode", "mode", "{}"),
    ("envs", "envs", "{}"),
    ("vector_mode", "vector", "{}"),
    ("frames", "frames", "{}"),
    ("steps_per_s", "steps/s", "{:.0f}"),
    ("vs_none", "x none", "{:.2f}"),
    ("producer_p50_us", "p50 us/vstep", "{:.1f}"),
    ("producer_p99_us", "p99 us/vstep", "{:.1f}"),
    ("cpu_us", "cpu us/f", "{:.0f}"),
    ("rollout_cpu_us", "rollout cpu us/f", "{:.0f}"),
    ("bytes_per_frame", "B/frame", "{:.0f}"),
    ("dropped", "dropped", "{}"),
    ("verified", "verified", "{}"),
)


# --------------------------------------------------------------------------- reading
@dataclass
class ReadResult:
    """Reading one episode's frames in step order (fresh store, cold reader cache)."""

    layout: str
    frames: int
    chunks: int
    frames_per_s: float
    seconds: float
    bytes_read: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_once(path: Path, eid: int) -> tuple[float, int, int]:
    with FrameStore.open(path, readonly=True) as st:
        t0 = time.perf_counter()
        n = sum(1 for _ in st.iter_frames(eid))
        seconds = time.perf_counter() - t0
        chunks = st.reader.chunks_decoded
        return seconds, n, chunks


def read_interleaved(
    fs: FrameSet,
    *,
    episodes: int = 16,
    repeat: int = 7,
    workdir: str | os.PathLike | None = None,
) -> list[ReadResult]:
    """Episode 0 of ``episodes`` recorded interleaved (one ``record_steps`` batch per
    step) against the same frames recorded alone; each read ``repeat`` times, the two
    layouts alternating, medians reported. ``fs`` supplies ``episodes`` equal slices."""
    per = len(fs) // episodes
    slices: Sequence[list[np.ndarray]] = [
        fs.frames[e * per : (e + 1) * per] for e in range(episodes)
    ]
    root = Path(tempfile.mkdtemp(prefix="fsbench-read-", dir=workdir))
    try:
        with FrameStore.open(root / "interleaved.store") as st, st.recorder(fs.env_id) as rec:
            ids = [rec.open_episode(seed=e) for e in range(episodes)]
            for k in range(per):
                rec.record_steps(ids, [s[k] for s in slices])
            for eid in ids:
                rec.close_episode(eid)
        with FrameStore.open(root / "alone.store") as st, st.recorder(fs.env_id) as rec:
            alone = rec.begin_episode(seed=0)
            for frame in slices[0]:
                rec.record_step(frame)
            rec.end_episode()
        paths = {"1 of 16 interleaved": (root / "interleaved.store", ids[0]),
                 "alone": (root / "alone.store", alone)}  # fmt: skip
        times: dict[str, list[float]] = {k: [] for k in paths}
        chunks: dict[str, int] = {}
        for _ in range(repeat):
            for label, (path, eid) in paths.items():
                seconds, n, chunks[label] = _read_once(path, eid)
                assert n == per
                times[label].append(seconds)
        out = []
        for label, (path, eid) in paths.items():
            with FrameStore.open(path, readonly=True) as st:
                read = st.episode_bytes(eid)
            med = statistics.median(times[label])
            out.append(ReadResult(label, per, chunks[label], per / med, med, read))
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


READ_TABLE = (
    ("layout", "episode", "{}"),
    ("frames", "frames", "{}"),
    ("chunks", "chunks", "{}"),
    ("frames_per_s", "frames/s", "{:.0f}"),
    ("seconds", "seconds", "{:.4f}"),
    ("bytes_read", "bytes read", "{}"),
)
