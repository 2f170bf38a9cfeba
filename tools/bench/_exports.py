"""``framestore bench --exports``: the dataset exports of one long episode, side by side.

One Assault episode of ``steps`` steps (default 10,000: the random policy of ``framestore
record`` played on through game overs, so it is one episode) is recorded once; then
``parquet``, ``lerobot``, ``rrd`` and ``minari`` export it in ONE run, interleaved round
by round (the order rotates; the median of each column is reported, so a slow moment of a
shared machine hits every format alike). Each export runs in a forked child (fresh
allocator state) with its libraries imported beforehand, as the CLI has them by the time
it exports: the columns are the export's own cost.

Per export: wall seconds and CPU seconds (user + system, all threads: what the work costs
when a loaded machine stretches wall time), both against parquet's; the peak RSS growth
over the export, and the same for an episode a tenth as long (``short steps``, exported
in the same rounds): streaming means the two are about equal; the bytes written; and
whether the progress callback ended at the planned step count.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._frames import capture, record_store
from ._measure import RssSampler, dir_bytes, in_child

__all__ = ["EXPORTS_TABLE", "EXPORT_FORMATS", "ExportResult", "run_exports"]

EXPORT_FORMATS = ("parquet", "lerobot", "rrd", "minari")
EXPORT_STEPS = 10_000


@dataclass
class ExportResult:
    """One format's medians over the rounds."""

    format: str
    steps: int
    rounds: int
    seconds: float = 0.0
    vs_parquet: float | None = None
    cpu_s: float = 0.0
    cpu_vs_parquet: float | None = None
    peak_mb: float = 0.0  # RSS growth exporting the long episode
    short_steps: int = 0
    short_peak_mb: float = 0.0  # the same for the short one
    out_mb: float = 0.0
    progress_ok: bool | None = None  # the last progress call said planned == done
    error: str | None = None


EXPORTS_TABLE = (
    ("format", "format", "{}"),
    ("steps", "steps", "{}"),
    ("rounds", "rounds", "{}"),
    ("seconds", "seconds", "{:.2f}"),
    ("vs_parquet", "vs parquet", "{:.2f}"),
    ("cpu_s", "cpu s", "{:.2f}"),
    ("cpu_vs_parquet", "cpu vs parquet", "{:.2f}"),
    ("peak_mb", "peak MB", "{:.0f}"),
    ("short_steps", "short steps", "{}"),
    ("short_peak_mb", "short peak MB", "{:.0f}"),
    ("out_mb", "MB out", "{:.1f}"),
    ("progress_ok", "progress", "{}"),
)


def _export(fmt: str, store: str, out: Path) -> dict[str, Any]:
    """One export, measured (runs in a forked child)."""
    from framestore import FrameStore

    from ..export import export_lerobot, export_minari, export_parquet, export_rrd

    fn = {
        "parquet": export_parquet,
        "lerobot": export_lerobot,
        "rrd": export_rrd,
        "minari": export_minari,
    }[fmt]
    last: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        last[:] = [(done, total)]

    with FrameStore.open(store, readonly=True) as st, RssSampler() as mem:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn(st, out, progress=progress)
        seconds = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    size = dir_bytes(out) if out.is_dir() else out.stat().st_size
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_mb": mem.growth / 2**20,
        "out_mb": size / 2**20,
        "progress_ok": bool(last) and last[0][0] == last[0][1],
    }


def _output(fmt: str, root: Path, name: str) -> Path:
    return root / (f"{name}.rrd" if fmt == "rrd" else f"{name}-v0")


def _remove(out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out, ignore_errors=True)
    else:
        out.unlink(missing_ok=True)


def _warm_imports(formats: Sequence[str]) -> None:
    """Import what the exports use, in the parent: the forked children inherit it."""
    import PIL.PngImagePlugin  # noqa: F401
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    pa.array([0])  # pyarrow imports pandas on its first array

    from .. import export  # noqa: F401  (the exporters themselves)

    if "rrd" in formats:
        import rerun  # noqa: F401
    if "minari" in formats:
        import minari  # noqa: F401


def _one_episode_store(steps: int, path: Path) -> None:
    fs = capture("assault", steps)
    n = len(fs)
    fs.episodes = [(0, n)]  # game overs played through: one long episode
    fs.terminated, fs.truncated = [False] * n, [False] * n
    fs.actions = [None] + [0 if a is None else a for a in fs.actions[1:]]
    record_store(fs, path)


def run_exports(
    steps: int = EXPORT_STEPS,
    *,
    formats: Sequence[str] = EXPORT_FORMATS,
    rounds: int = 5,
    workdir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ExportResult]:
    """``rounds`` rounds of every format on a ``steps``-step episode and on one a tenth
    as long, the order rotating each round; one row per format with the medians."""
    root = Path(tempfile.mkdtemp(prefix="bench-exports-", dir=workdir))
    short = max(1, steps // 10)
    try:
        if progress:
            progress(f"recording a {steps}-step and a {short}-step Assault episode")
        stores = {"long": root / "long", "short": root / "short"}
        _one_episode_store(steps, stores["long"])
        _one_episode_store(short, stores["short"])
        _warm_imports(formats)
        runs: dict[tuple[str, str], list[dict]] = {(f, k): [] for f in formats for k in stores}
        for r in range(rounds):
            order = list(formats[r % len(formats) :]) + list(formats[: r % len(formats)])
            for fmt in order:
                for kind, store in stores.items():
                    if progress:
                        progress(f"round {r + 1}/{rounds}: {fmt} ({kind})")
                    out = _output(fmt, root, f"{fmt}-{kind}-{r}")
                    try:
                        runs[fmt, kind].append(in_child(_export, fmt, str(store), out))
                    except Exception as e:  # one broken run must not end the bench
                        runs[fmt, kind].append({"error": f"{type(e).__name__}: {e}"})
                    _remove(out)
        rows = [_median_row(f, steps, short, runs[f, "long"], runs[f, "short"]) for f in formats]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = next((r for r in rows if r.format == "parquet" and not r.error), None)
    for row in rows:
        if base is not None and not row.error:
            row.vs_parquet = row.seconds / base.seconds
            row.cpu_vs_parquet = row.cpu_s / base.cpu_s
    return rows


def _median_row(
    fmt: str, steps: int, short: int, long_runs: list[dict], short_runs: list[dict]
) -> ExportResult:
    row = ExportResult(fmt, steps, len(long_runs), short_steps=short)
    errors = [r["error"] for r in long_runs + short_runs if "error" in r]
    if errors:
        row.error = errors[0]
        return row

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    row.seconds, row.cpu_s = med(long_runs, "seconds"), med(long_runs, "cpu_s")
    row.peak_mb, row.short_peak_mb = med(long_runs, "peak_mb"), med(short_runs, "peak_mb")
    row.out_mb = med(long_runs, "out_mb")
    row.progress_ok = all(r["progress_ok"] for r in long_runs + short_runs)
    return row
