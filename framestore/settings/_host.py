"""The host a recording runs on: what it offers (``detect_host``) and which profile of
buffer sizes it gets (``HOST_PROFILES``, ``host_profile``)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ._schema import GiB, MiB


@dataclass(frozen=True)
class HostInfo:
    """What the host offers a recording.

    Attributes:
        cores: CPU cores this process may use.
        ram_bytes: total RAM.
        free_ram_bytes: RAM available now (``psutil.virtual_memory().available``).
        disk_kind: ``"nvme"``, ``"ssd"``, ``"hdd"`` or ``"unknown"``.
    """

    cores: int
    ram_bytes: int
    free_ram_bytes: int
    disk_kind: str = "unknown"


DISK_KINDS = ("nvme", "ssd", "hdd", "unknown")
_VIRTUAL_BLOCK_PREFIXES = ("loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd")


def _kind_of_block(dev_dir: Path) -> str | None:
    try:
        rotational = (dev_dir / "queue" / "rotational").read_text().strip()
    except OSError:
        return None
    if dev_dir.name.startswith("nvme"):
        return "nvme"
    return "hdd" if rotational == "1" else "ssd"


def _disk_kind(path: str | os.PathLike[str] | None) -> str:
    """Disk kind for ``path`` (its block device, or its parent if it is a partition);
    without a usable path, the kind shared by all physical disks, else ``"unknown"``."""
    if not sys.platform.startswith("linux"):
        return "unknown"
    if path is not None:
        try:
            st = os.stat(path)
            dev = Path(
                os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
            )
            for candidate in (dev, dev.parent):
                slaves = sorted((candidate / "slaves").glob("*"))
                if candidate.name.startswith("dm-") and slaves:  # LVM / dm-crypt
                    candidate = Path(os.path.realpath(slaves[0]))
                    if not (candidate / "queue").exists():
                        candidate = candidate.parent
                kind = _kind_of_block(candidate)
                if kind:
                    return kind
        except (OSError, ValueError):
            pass
    kinds = set()
    for dev_dir in Path("/sys/block").glob("*"):
        if dev_dir.name.startswith(_VIRTUAL_BLOCK_PREFIXES):
            continue
        kind = _kind_of_block(dev_dir)
        if kind:
            kinds.add(kind)
    return kinds.pop() if len(kinds) == 1 else "unknown"


def detect_host(path: str | os.PathLike[str] | None = None) -> HostInfo:
    """Detect this host: usable cores, total and available RAM, and the kind of the disk
    holding ``path`` (by default, of all physical disks if they agree).

    Disk kind comes from ``/sys/block/*/queue/rotational`` on Linux; note that many virtual
    disks (virtio) report rotational even on SSD-backed hosts.
    """
    import psutil

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    vm = psutil.virtual_memory()
    return HostInfo(
        cores=max(1, cores),
        ram_bytes=int(vm.total),
        free_ram_bytes=int(vm.available),
        disk_kind=_disk_kind(path),
    )


@dataclass(frozen=True)
class HostProfile:
    """How a class of host scales the family/game values (which are sized for ``minimum``).

    Attributes:
        name: profile name.
        min_cores, min_ram_bytes: what a host needs for this profile. RAM thresholds sit
            below the nominal size (16 GB machines report ~15.5 GiB).
        scale: multiplier applied to the buffer sizes and batch size.
        buffers: ``(low, high)`` range for ``hub_buffer`` and ``sink_queue``;
            ``queue_frames`` is only capped at ``high`` (large frames keep it lower).
        batch: ``(low, high)`` range for ``batch_size``.
        checkpoint_min: smallest ``checkpoint_interval``.
        queue_bytes_cap: largest derived ``queue_bytes``.
        compress_threads: compression pool size.
        lite_steps, lite_bytes: telemetry-lite ring bounds.
        lite_suggested: telemetry-lite is the better choice for human play on this host.
        writer: where the frame writer and the SQLite sink run (``"thread"`` or
            ``"process"``), chosen from ``framestore bench --writers`` (docs/BENCHMARKS.md).
        summary: one line describing the profile, for people.
    """

    name: str
    min_cores: int
    min_ram_bytes: int
    scale: int
    buffers: tuple[int, int]
    batch: tuple[int, int]
    checkpoint_min: int
    queue_bytes_cap: int
    compress_threads: int
    lite_steps: int
    lite_bytes: int
    lite_suggested: bool
    writer: str = "thread"
    summary: str = ""


HOST_PROFILES: dict[str, HostProfile] = {
    "minimum": HostProfile(
        name="minimum",
        min_cores=4,
        min_ram_bytes=7 * GiB,
        scale=1,
        buffers=(256, 2048),
        batch=(64, 64),
        checkpoint_min=1024,
        queue_bytes_cap=256 * MiB,
        compress_threads=2,
        lite_steps=36_000,
        lite_bytes=256 * MiB,
        lite_suggested=True,
        summary="4 cores, 8 GB: buffers <= 2048, batch 64, writer threads; telemetry-lite "
        "suggested for human play",
    ),
    "good": HostProfile(
        name="good",
        min_cores=6,
        min_ram_bytes=14 * GiB,
        scale=4,
        buffers=(4096, 8192),
        batch=(128, 256),
        checkpoint_min=2048,
        queue_bytes_cap=1 * GiB,
        compress_threads=3,
        lite_steps=108_000,
        lite_bytes=512 * MiB,
        lite_suggested=False,
        writer="process",
        summary="6 cores, 16 GB, SSD/NVMe: buffers 4096-8192, batch 128-256, checkpoint >= 2048, "
        "storage process",
    ),
    "more-than-enough": HostProfile(
        name="more-than-enough",
        min_cores=8,
        min_ram_bytes=28 * GiB,
        scale=8,
        buffers=(8192, 16384),
        batch=(256, 512),
        checkpoint_min=4096,
        queue_bytes_cap=2 * GiB,
        compress_threads=4,
        lite_steps=216_000,
        lite_bytes=1 * GiB,
        lite_suggested=False,
        writer="process",
        summary=">= 8 cores, >= 32 GB: buffers 8192-16384, batch 256-512, checkpoint >= 4096, "
        "storage process",
    ),
}
_PROFILE_ORDER = ("minimum", "good", "more-than-enough")


def host_profile(host: HostInfo) -> str:
    """The name of the largest ``HOST_PROFILES`` entry ``host`` meets.

    A host below ``minimum`` still gets ``minimum`` (its settings are the smallest we
    offer; the memory budget then protects a small machine). A spinning disk (``"hdd"``)
    lowers the profile by one step: it drains big queues slowly, so big buffers would only
    hold more unwritten frames. ``"unknown"`` disks are not penalised.
    """
    level = 0
    for i, name in enumerate(_PROFILE_ORDER):
        p = HOST_PROFILES[name]
        if host.cores >= p.min_cores and host.ram_bytes >= p.min_ram_bytes:
            level = i
    if host.disk_kind == "hdd" and level > 0:
        level -= 1
    return _PROFILE_ORDER[level]
