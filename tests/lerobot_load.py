"""Run by test_export_lerobot.py inside LeRobot's own venv (``../shared/lerobot/
setup_venv.sh``), never imported by the suite: load an exported dataset with LeRobot's
``LeRobotDataset`` offline and print, per row, what the test compares with the store.

    python lerobot_load.py DATASET_DIR   -> JSON on stdout
"""

import hashlib
import json
import sys

import numpy as np
import torch
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset


def video_backend(root: str) -> tuple[str | None, dict[str, str]]:
    """The backend LeRobot decodes this dataset's videos with here (``torchcodec``, its
    default, needs FFmpeg's shared libraries on the system; ``pyav`` goes through
    ``torchvision.io.VideoReader``), and for each one that cannot, the exact error."""
    errors = {}
    try:
        import torchcodec.decoders  # noqa: F401

        return "torchcodec", errors
    except Exception as e:  # noqa: BLE001
        text = str(e).splitlines()
        missing = sorted({ln.strip() for ln in text if "cannot open shared object" in ln})
        errors["torchcodec"] = f"{type(e).__name__}: {text[0]} ({'; '.join(missing)})"
    try:
        LeRobotDataset("framestore/export", root=root, video_backend="pyav")[0]
        return "pyav", errors
    except Exception as e:  # noqa: BLE001
        errors["pyav"] = f"{type(e).__name__}: {e}"
    return None, errors


def main(root: str) -> None:
    ds = LeRobotDataset("framestore/export", root=root)
    video = bool(ds.meta.video_keys)
    backend, video_errors = video_backend(root) if video else (None, {})
    decode_video = backend is not None
    if decode_video:
        ds = LeRobotDataset("framestore/export", root=root, video_backend=backend)
    rows = []
    for i in range(len(ds)) if (not video or decode_video) else []:
        item = ds[i]
        frames = {}
        for key in ds.meta.camera_keys:
            pixels = (item[key] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            frames[key] = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
            if video:
                frames[key] = pixels.astype(np.float64).mean()
        action = item["action"]
        rows.append(
            {
                "index": int(item["index"]),
                "episode_index": int(item["episode_index"]),
                "frame_index": int(item["frame_index"]),
                "timestamp": float(item["timestamp"]),
                "episode_id": int(item["episode_id"]),
                "seed": int(item["seed"]),
                "step": int(item["step"]),
                "action": action if isinstance(action, str) else action.tolist(),
                "reward": float(item["next.reward"]),
                "done": bool(item["next.done"]),
                "terminated": bool(item["next.terminated"]),
                "truncated": bool(item["next.truncated"]),
                "task": item["task"],
                "frames": frames,
            }
        )
    if video and not decode_video:  # the table still loads: rows without frames
        table = ds.hf_dataset.with_format(None)
        rows = [{k: v for k, v in r.items() if not k.startswith("observation.")} for r in table]
    out = {
        "codebase_version": CODEBASE_VERSION,
        "fps": ds.fps,
        "num_frames": ds.num_frames,
        "num_episodes": ds.num_episodes,
        "camera_keys": ds.meta.camera_keys,
        "video_keys": ds.meta.video_keys,
        "decoded_video": decode_video,
        "video_backend": backend,
        "video_errors": video_errors,
        "stats_keys": sorted(ds.meta.stats),
        "episodes": [
            {
                k: ep[k]
                for k in ("episode_index", "length", "dataset_from_index", "dataset_to_index")
            }
            for ep in ds.meta.episodes
        ],
        "rows": rows,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
