"""Minari writer: episodes of a store as a Minari (Farama offline RL) dataset.

``-o DIR`` makes ``DIR/data/`` (``metadata.json`` and ``main_data.hdf5``, Minari's HDF5
storage): ``minari.load_dataset(DIR.name)`` opens it with ``MINARI_DATASETS_PATH`` set to
``DIR``'s parent, and ``MinariDataset(DIR/"data")`` from anywhere. ``DIR``'s name is the
dataset id, so it has Minari's form ``(namespace/)name-v<version>`` (``assault-v0``).

Per episode (Minari's layout): ``observations`` are the frames of its steps (T+1, the
reset included) as uint8 arrays, exactly as stored (Minari's ``jpeg_encoding`` is off: its
JPEG default changes pixels); ``actions``, ``rewards``, ``terminations`` and
``truncations`` of the T steps after the reset; ``infos["json"]`` each step's ``info`` as
JSON text (T+1); the seed and ``reset`` options. The dataset's ``env_spec`` is the one the
run stored (``max_episode_steps``, wrappers and kwargs included), so
``recover_environment()`` makes the environment again; its observation space is the
frames' ``Box(0, 255, HxWxC, uint8)``.

Streaming: episodes are built with Minari's ``EpisodeBuffer`` directly (no jax) and
appended to the HDF5 file a slice of at most ``_SLICE_BYTES`` of frames at a time (Minari's
HDF5 storage extends an episode's datasets), so memory does not grow with the episode.
Raw frames are large (about 100 KB per Atari frame): Minari is an export target, not a
way to keep data. Written as ``DIR.partial/``, renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from framestore import FrameStore
from framestore.errors import InvalidInput
from framestore.extras import require
from framestore.files import fsync_dir, fsync_file
from telemetry.jsonsafe import dumps

from ._options import ExportOptions
from ._report import Progress
from ._select import Selection, Span, check_new_path, iter_step_frames, select_episodes

__all__ = ["MinariReport", "export_minari"]

_SLICE_BYTES = 16 * 1024 * 1024  # frames handed to Minari at a time
# Minari's dataset id: (namespace/)name-v<version>
_DATASET_ID = re.compile(r"(?:[\w:.-]+/)?[\w:.-]+-v\d+")


@dataclass
class MinariReport:
    """What one Minari export wrote."""

    path: str
    format: str = "minari"
    dataset_id: str = ""
    episodes: list[int] = field(default_factory=list)
    empty_episodes: list[int] = field(default_factory=list)  # a reset and no step: left out
    steps: int = 0  # transitions (Minari's total_steps)
    frames: int = 0
    recoverable: bool = False  # the env spec makes the environment again
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_minari(
    store: FrameStore,
    out: str | os.PathLike,
    *,
    episodes: list[int] | None = None,
    run_id: int | None = None,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
) -> MinariReport:
    """Export episodes as the Minari dataset directory ``out`` (named like ``name-v0``).

    Raises:
        InvalidInput: bad arguments, output name or path; episodes with dropped frames,
            of different frame sizes or environments (nothing is written).
        MissingExtra: minari or h5py is not installed (the ``minari`` extra).
        CorruptData: a corrupt frame (the partial output is removed).
    """
    minari = require("minari", extra="minari", what="Minari export")
    require("h5py", extra="minari", what="Minari export")
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    selection = select_episodes(store, episodes, run_id, options or ExportOptions(), what="minari")
    out_path, partial = check_new_path(out, directory=True)
    dataset_id = out_path.name
    if not _DATASET_ID.fullmatch(dataset_id):
        raise InvalidInput(
            f"{out_path}: a Minari dataset directory is named by its dataset id, "
            "name-v<version> (e.g. assault-v0)"
        )
    spaces, env_spec = _spaces(store, selection)
    t0 = time.perf_counter()
    report = MinariReport(path=str(out_path), dataset_id=dataset_id)
    report.recoverable = env_spec is not None
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        storage = MinariStorage.new(
            partial / "data",
            observation_space=spaces[0],
            action_space=spaces[1],
            env_spec=env_spec,
            data_format="hdf5",
            jpeg_encoding=False,
        )
        storage.update_metadata(_metadata(store, selection, dataset_id, env_spec, minari))
        _write_episodes(store, selection, storage, EpisodeBuffer, report, progress)
        for name in ("metadata.json", "main_data.hdf5"):
            fsync_file(partial / "data" / name)
        fsync_dir(partial / "data")
        if out_path.is_dir():
            out_path.rmdir()  # checked empty when planning
        os.replace(partial, out_path)
        fsync_dir(out_path.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    report.bytes = sum(p.stat().st_size for p in (out_path / "data").iterdir())
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def _spaces(store: FrameStore, selection: Selection) -> tuple[tuple[Any, Any], Any]:
    """``((observation space, action space), EnvSpec or None)``; ``InvalidInput`` when
    the episodes do not fit one dataset."""
    import gymnasium as gym

    shapes = {t for s in selection.spans for t in s.shapes}
    if len(shapes) != 1:
        raise InvalidInput(
            f"the chosen episodes have frames of several sizes ({', '.join(sorted(shapes))}); "
            "a Minari dataset has one observation space: export them separately"
        )
    for span in selection.spans:
        if span.frames != span.rows:
            raise InvalidInput(
                f"episode {span.id} has {span.rows - span.frames} step(s) without a stored "
                "frame; a Minari episode needs an observation at every step: export the "
                "other episodes (--episode ID ...), or this one as LeRobot, rerun or Parquet"
            )
    shape = tuple(int(d) for d in shapes.pop().split("x"))
    observation = gym.spaces.Box(0, 255, shape, np.uint8)
    action_specs = {dumps(store.catalog.episodes.action_spec(s.id)) for s in selection.spans}
    env_specs = {dumps(store.run(r).env_spec) for r in {s.episode.run_id for s in selection.spans}}
    if len(action_specs) != 1 or len(env_specs) != 1:
        raise InvalidInput(
            "the chosen episodes come from different environments or action spaces; "
            "a Minari dataset has one: export them separately"
        )
    action = _action_space(json.loads(action_specs.pop()))
    stored = json.loads(env_specs.pop()) or {}
    env_spec = None
    if isinstance(stored.get("spec"), dict) and not stored.get("not_replayable"):
        env_spec = gym.envs.registration.EnvSpec.from_json(json.dumps(stored["spec"]))
    return (observation, action), env_spec


def _action_space(spec: dict[str, Any] | None) -> Any:
    import gymnasium as gym

    kind = (spec or {}).get("type")
    if kind == "Discrete":
        return gym.spaces.Discrete(spec["n"], start=spec.get("start", 0))
    if kind == "Box":
        dtype = np.dtype(spec["dtype"])
        low = np.asarray(spec["low"], dtype=dtype).reshape(spec["shape"])
        high = np.asarray(spec["high"], dtype=dtype).reshape(spec["shape"])
        return gym.spaces.Box(low, high, tuple(spec["shape"]), dtype)
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(spec["nvec"], dtype=spec["dtype"], start=spec["start"])
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(spec["n"])
    raise InvalidInput(
        f"Minari export needs a Discrete, Box, MultiDiscrete or MultiBinary action space, "
        f"not {kind or 'an unrecorded one'}"
    )


def _metadata(
    store: FrameStore, selection: Selection, dataset_id: str, env_spec: Any, minari: Any
) -> dict[str, Any]:
    run = store.run(selection.spans[0].episode.run_id)
    packages = (run.env_spec or {}).get("packages") or {}
    meta: dict[str, Any] = {
        "dataset_id": dataset_id,
        "minari_version": minari.__version__,
        "algorithm_name": "recorded with framestore",
        "description": (
            f"Exported by framestore from {store.name}: episodes "
            f"{', '.join(str(s.id) for s in selection.spans[:20])}"
            f"{' ...' if len(selection.spans) > 20 else ''}; observations are the rendered "
            "frames, lossless"
        ),
        "requirements": [f"{name.replace('_', '-')}=={v}" for name, v in packages.items() if v],
    }
    if env_spec is not None:
        meta["eval_env_spec"] = env_spec.to_json()
    return meta


def _write_episodes(
    store: FrameStore,
    selection: Selection,
    storage: Any,
    episode_buffer: Any,
    report: MinariReport,
    progress: Progress | None,
) -> None:
    """Each episode as slices of ``EpisodeBuffer``s with the episode's index: Minari's
    HDF5 storage appends a slice to the episode's datasets."""
    planned, done = selection.rows, 0
    for span in selection.spans:
        if span.rows < 2:
            report.empty_episodes.append(span.id)
            continue
        index = len(report.episodes)
        slices = _Slices(span, index)
        for item in iter_step_frames(store, [span]):
            assert item.frame is not None  # checked when planning
            slices.add(item.step, item.frame)
            if slices.bytes >= _SLICE_BYTES:
                storage.update_episodes([slices.take(episode_buffer)])
            done += 1
            if progress is not None:
                progress(done, planned)
        if slices.frames:
            storage.update_episodes([slices.take(episode_buffer)])
        # Each slice set the episode's total_steps to its own length: the whole one.
        storage.update_episode_metadata([{"total_steps": slices.steps}], [index])
        report.episodes.append(span.id)
        report.steps += slices.steps
        report.frames += slices.seen


class _Slices:
    """The part of an episode not yet handed to Minari."""

    def __init__(self, span: Span, index: int):
        self.span, self.index = span, index
        self.first = True
        self.steps = 0  # transitions handed over or held
        self.seen = 0  # frames handed over or held
        self._reset()

    def _reset(self) -> None:
        self.frames: list[np.ndarray] = []
        self.infos: list[str] = []
        self.actions: list[Any] = []
        self.rewards: list[float] = []
        self.terminations: list[bool] = []
        self.truncations: list[bool] = []
        self.bytes = 0

    def add(self, step: Any, frame: np.ndarray) -> None:
        self.frames.append(frame)
        self.infos.append(dumps(step.info))
        self.bytes += frame.nbytes
        self.seen += 1
        if self.seen > 1:  # the first frame is the reset observation: no action led there
            self.actions.append(step.action)
            self.rewards.append(np.nan if step.reward is None else float(step.reward))
            self.terminations.append(bool(step.terminated))
            self.truncations.append(bool(step.truncated))
            self.steps += 1

    def take(self, episode_buffer: Any) -> Any:
        ep = self.span.episode
        buffer = episode_buffer(
            id=self.index,
            seed=ep.seed if self.first else None,
            options=ep.reset_options if self.first else None,
            observations=self.frames,
            actions=self.actions,
            rewards=self.rewards,
            terminations=self.terminations,
            truncations=self.truncations,
            infos={"json": self.infos},
        )
        self.first = False
        self._reset()
        return buffer
