"""framestore.torch against LeRobot's ``LeRobotDataset`` on the same frames (issue 20).

LeRobot lives in its own venv (``../shared/lerobot/setup_venv.sh VENV``), so this script
runs in two interpreters, each step a separate process::

    python3 -m tools.bench.lerobot_compare npz STORE frames.npz        # this venv
    VENV/bin/python tools/bench/lerobot_compare.py build image frames.npz ROOT
    python3 -m tools.bench.lerobot_compare run framestore STORE         # one JSON line
    VENV/bin/python tools/bench/lerobot_compare.py run lerobot-image ROOT

Run the two ``run`` lines alternately, several times, and compare medians (a loaded
machine: CPU per item is steadier than items/s). Each ``run`` measures 1000 random single
items in the process, then one DataLoader epoch (2 workers, batch 64) shuffled, shuffled
with 4-frame windows (LeRobot: ``delta_timestamps`` of the last 4 frames), and in order;
``run IMPL ROOT N`` stops each epoch after N items (LeRobot's 4-frame windows take
minutes for a whole epoch of 3000 frames).
framestore uses ``collate_steps``; LeRobot PyTorch's default collate. IMPL
``framestore-chunks`` is framestore with ``ChunkShuffleSampler`` in place of
``shuffle=True`` for the shuffled epochs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

FPS = 60
KEY = {"framestore": "render"}
IMAGE = "observation.image"


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def export_npz(store: str, out: str) -> None:
    """Every stored frame of ``store`` with its episode index and action, for ``build``."""
    import numpy as np

    from framestore import FrameStore

    frames, episodes, actions = [], [], []
    with FrameStore.open(store, readonly=True) as st:
        for index, ep in enumerate(st.episodes()):
            track = st.step_track(ep.id)
            by_step = dict(zip(track.steps, track.actions, strict=True))
            for step, frame in st.iter_steps_frames(ep.id):
                frames.append(frame)
                episodes.append(index)
                action = by_step.get(step)
                actions.append(0 if action is None else int(action))
    np.savez(out, frames=np.stack(frames), episodes=np.array(episodes), actions=np.array(actions))


def build(layout: str, npz: str, root: str) -> None:
    """A LeRobot dataset (``image`` or ``video`` layout) of the frames in ``npz``."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    data = np.load(npz)
    frames, episodes, actions = data["frames"], data["episodes"], data["actions"]
    features = {
        IMAGE: {
            "dtype": layout,
            "shape": frames.shape[1:],
            "names": ["height", "width", "channels"],
        },
        "action": {"dtype": "int64", "shape": (1,), "names": None},
    }
    ds = LeRobotDataset.create(
        "local/assault", fps=FPS, features=features, root=root, use_videos=layout == "video"
    )
    for e in np.unique(episodes):
        for i in np.flatnonzero(episodes == e):
            ds.add_frame({IMAGE: frames[i], "action": np.array([actions[i]]), "task": "play"})
        ds.save_episode()
    ds.finalize()


def _maker(impl: str, root: str) -> tuple[Any, str, Any]:
    if impl in ("framestore", "framestore-chunks"):
        from framestore.torch import StepDataset, collate_steps

        window = {"render": [-3, -2, -1, 0]}
        return (lambda w: StepDataset(root, window=window if w else None)), "render", collate_steps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    def make(w: bool) -> Any:
        dt = {IMAGE: [-3 / FPS, -2 / FPS, -1 / FPS, 0.0]} if w else None
        return LeRobotDataset("local/assault", root=root, delta_timestamps=dt)

    return make, IMAGE, None


def run(impl: str, root: str, epoch_items: int | None = None) -> dict[str, Any]:
    """One line of measurements (see the module docstring)."""
    import numpy as np
    from torch.utils.data import DataLoader

    make, key, collate = _maker(impl, root)
    out: dict[str, Any] = {"impl": impl}
    ds = make(False)
    picks = np.random.default_rng(0).integers(len(ds), size=min(1000, len(ds)))
    t0, c0 = time.perf_counter(), _cpu()
    for i in picks:
        ds[int(i)][key]
    out["random items/s"] = len(picks) / (time.perf_counter() - t0)
    out["random cpu us/item"] = 1e6 * (_cpu() - c0) / len(picks)
    for name, window, shuffle in (
        ("shuffled epoch", False, True),
        ("4-frame windows", True, True),
        ("sequential", False, False),
    ):
        kw: dict[str, Any] = {} if collate is None else {"collate_fn": collate}
        t0, c0, n = time.perf_counter(), _cpu(), 0
        dataset = make(window)
        if shuffle and impl == "framestore-chunks":
            from framestore.torch import ChunkShuffleSampler

            sampler = ChunkShuffleSampler(dataset, batch_size=64, workers=2)
            kw["sampler"], shuffle = sampler, False
        batches = iter(DataLoader(dataset, batch_size=64, shuffle=shuffle, num_workers=2, **kw))
        for b in batches:
            n += len(b[key])
            if epoch_items is not None and n >= epoch_items:
                break
        seconds = time.perf_counter() - t0
        del batches  # joins the workers: their CPU time is counted
        out[f"{name} items/s"] = n / seconds
        out[f"{name} cpu us/item"] = 1e6 * (_cpu() - c0) / n
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["npz"]:
        export_npz(argv[1], argv[2])
    elif argv[:1] == ["build"]:
        build(argv[1], argv[2], argv[3])
    elif argv[:1] == ["run"]:
        print(json.dumps(run(argv[1], argv[2], *(int(a) for a in argv[3:4]))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
