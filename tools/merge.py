"""``framestore merge DEST SRC...``: combine stores (one per rollout worker, or from
several machines) into one.

Every source is checked before anything changes (not DEST itself, not given twice, not
locked by a recorder, nothing left ``recording``, a schema this framestore knows, clean
under ``verify --quick``); a bad one is refused with one line. Then, holding DEST's
writer lock and each source's in turn, every source is merged crash-safely as
``framestore.merging`` describes: its sealed segments are copied (hard-linked with
``move``) under new segment ids and never rewritten, its runs, episodes and steps are
re-keyed and committed in ONE transaction that also journals the source as merged. A
re-run after a crash undoes the unfinished source and merges it again; sources the
journal says are merged (same store id, unchanged) are skipped, so nothing is
duplicated. A source merged earlier that changed since is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from framestore import FrameStore, InvalidInput, StoreLocked
from framestore.catalog import MergeRecord
from framestore.errors import NotAStore
from framestore.merging import (
    PHASES,
    header_id,
    new_segment_ids,
    place_segments,
    remove_store_files,
    undo_incomplete_merges,
)
from framestore.segments import checked_segment_dir, segment_path

from .verify import verify

__all__ = ["PHASES", "MergeReport", "SourceResult", "merge"]

Progress = Callable[[int, int], None]  # (bytes done, bytes total) of the current source
Hook = Callable[[str], None]
_PAGE = 10_000  # step rows copied at a time


@dataclass
class SourceResult:
    """What happened to one source. ``status``: ``merged``, ``already merged`` or
    ``removal finished`` (a ``--move`` that stopped after its commit)."""

    path: str
    status: str
    runs: int = 0
    episodes: int = 0
    steps: int = 0
    segments: int = 0
    segments_linked: int = 0
    bytes: int = 0
    episode_ids: dict[int, int] = field(default_factory=dict)  # source id -> id in DEST


@dataclass
class MergeReport:
    dest: str
    move: bool
    sources: list[SourceResult] = field(default_factory=list)
    interrupted_undone: list[int] = field(default_factory=list)  # segment ids removed
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Plan:
    path: Path
    kind: str  # merge | already | finish removal
    fingerprint: str = ""
    source_id: str = ""  # the journal's name for the source (store id, or its fingerprint)


# --------------------------------------------------------------------------- checks
def fingerprint(store: FrameStore) -> str:
    """A digest of a store's runs and live episodes: it changes when episodes are
    recorded, deleted or recovered, not when segments are compacted."""
    rows = store.catalog.fingerprint_rows()
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _refuse_urls(locations: list[str | os.PathLike]) -> None:
    """A URL is refused by name (with any ``user:password@`` left out), before ``Path()``
    would fold ``s3://bucket`` into ``s3:/bucket`` and report it missing."""
    for location in map(os.fspath, locations):
        if "://" in location:
            parts = urllib.parse.urlsplit(location)
            shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
            raise InvalidInput(
                f"{shown}: merge combines stores on this machine, not URLs "
                "(a published store is read-only)"
            )


def _check_paths(dest: Path, sources: list[Path]) -> None:
    if not sources:
        raise InvalidInput("give at least one source store")
    for i, src in enumerate(sources):
        if _same(src, dest):
            raise InvalidInput(f"{src} is DEST itself; a store cannot be merged into itself")
        if any(_same(src, other) for other in sources[:i]):
            raise InvalidInput(f"{src} is given twice")


def _dest_journal(dest: Path) -> list[MergeRecord]:
    """DEST's finished merges, read without changing it; refuses a DEST that cannot
    take a merge now (locked, left recording, not a store, newer schema, a segment
    directory that is a link: ``UnsafeStore``, before anything is written)."""
    checked_segment_dir(dest)
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return []
    with FrameStore.open(dest, readonly=True) as st:
        if st.writer_running():
            raise StoreLocked(str(dest), "a recorder or another maintenance command")
        stale = st.catalog.stale_recordings()
        if stale:
            raise InvalidInput(
                f"{dest}: episode {stale[0]} was left 'recording'; run `framestore recover` first"
            )
        return [m for m in st.catalog.merge_records() if m.state == "done"]


def _moved_from(path: Path, record: MergeRecord) -> bool:
    """Whether ``record`` moved the store at ``path`` itself (not a copy or backup of it
    that shares its store id): only then may a ``--move`` re-run delete what is left."""
    return record.mode == "move" and os.path.realpath(record.source_path) == os.path.realpath(path)


def _inspect(path: Path, done: list[MergeRecord], move: bool) -> _Plan:
    """Check one source without changing it; say what to do with it."""
    try:
        st = FrameStore.open(path, readonly=True)
    except NotAStore:
        if any(_moved_from(path, m) for m in done):  # removal stopped or finished
            return _Plan(path, "finish removal" if move and path.exists() else "already")
        raise
    with st:
        fp = fingerprint(st)
        # A store of 0.1.0 has no id until a writer opens it: its fingerprint names it.
        sid = st.catalog.store_id() or f"fingerprint:{fp}"
        earlier = [m for m in done if m.source_id == sid]
        if earlier:
            if earlier[-1].fingerprint != fp:
                raise InvalidInput(
                    f"{path} was merged into DEST before and has changed since; merging it "
                    "again would duplicate its episodes"
                )
            kind = "finish removal" if move and _moved_from(path, earlier[-1]) else "already"
            return _Plan(path, kind, fp, sid)
        if st.writer_running():
            raise StoreLocked(str(path), "a recorder")
        stale = st.catalog.stale_recordings()
        if stale:
            raise InvalidInput(
                f"{path}: episode {stale[0]} was left 'recording'; run `framestore recover` on it first"
            )
        report = verify(st, quick=True)
        if not report.ok:
            raise InvalidInput(
                f"{path} fails `framestore verify --quick` ({len(report.problems)} problem(s), "
                f"first: {report.problems[0]})"
            )
    return _Plan(path, "merge", fp, sid)


# --------------------------------------------------------------------------- merging
def _pages(rows: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    page: list[tuple] = []
    for r in rows:
        page.append(r)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def _commit(
    st: FrameStore, src: FrameStore, merge_id: int, pairs: list[tuple[int, int]]
) -> SourceResult:
    """Insert the source's runs, episodes and steps re-keyed, the segments' rows and the
    journal's ``done``: ONE transaction."""
    seg_map = {old: new for new, old in pairs}
    runs = src.catalog.export_runs()
    eps = src.catalog.export_episodes()
    with st.transaction() as cat:
        next_run, next_ep = cat.next_ids()
        run_map = {r["id"]: next_run + i for i, r in enumerate(runs)}
        ep_map = {e["id"]: next_ep + i for i, e in enumerate(eps)}
        for r in runs:
            cat.import_run(run_map[r["id"]], r)
        for e in eps:
            cat.import_episode(
                ep_map[e["id"]],
                run_map[e["run_id"]],
                e,
                continues=ep_map.get(e["continues_episode"]),
                stream_key=e["stream_key"],
            )
        steps = 0
        for page in _pages(src.catalog.iter_step_rows(ep_map), _PAGE):
            steps += cat.import_steps(
                (ep_map[r[0]], *r[1:8], None if r[8] is None else seg_map[r[8]], *r[9:])
                for r in page
            )
        for new, _old in pairs:
            path = segment_path(st.root, new)
            cat.record_segment(new, "sealed", path.stat().st_size, header_id=header_id(path))
        cat.finish_merge(merge_id, {"runs": run_map, "episodes": ep_map}, steps)
    return SourceResult(
        str(src.root), "merged", len(runs), len(eps), steps, len(pairs), episode_ids=ep_map
    )


def _merge_source(
    st: FrameStore, plan: _Plan, move: bool, progress: Progress | None, hook: Hook | None
) -> SourceResult:
    """Merge one checked source (the steps of ``framestore.merging``)."""
    with FrameStore.open(plan.path, create=False) as src, src.writer_lock():
        if fingerprint(src) != plan.fingerprint:
            raise InvalidInput(f"{plan.path} changed while the merge was being prepared")
        src_ids = sorted(src.catalog.live_chunks())
        pairs = list(zip(new_segment_ids(st, len(src_ids)), src_ids, strict=True))
        source_id = plan.source_id
        # journaled with the id each file's header names (a segment the source merged
        # itself keeps its first id there), so an undo recognises the files it placed
        journal = [(new, header_id(segment_path(src.root, old))) for new, old in pairs]
        merge_id = st.catalog.begin_merge(
            source_id, os.path.realpath(plan.path), plan.fingerprint, "move" if move else "copy",
            journal,
        )  # fmt: skip
        _call(hook, "journaled")
        linked = place_segments(src.root, st.root, pairs, link=move, progress=progress)
        _call(hook, "placed")
        result = _commit(st, src, merge_id, pairs)
        result.path = str(plan.path)
        result.segments_linked = linked
        result.bytes = sum(segment_path(st.root, new).stat().st_size for new, _ in pairs)
        _call(hook, "committed")
        if move:
            src.close()
            remove_store_files(plan.path)
            _call(hook, "removed")
    return result


def _merged_now(st: FrameStore, source_id: str) -> bool:
    return any(m.state == "done" and m.source_id == source_id for m in st.catalog.merge_records())


def _call(fn: Callable | None, *args: object) -> None:
    if fn is not None:
        fn(*args)


def merge(
    dest: str | os.PathLike,
    sources: Iterable[str | os.PathLike],
    *,
    move: bool = False,
    progress: Progress | None = None,
    _hook: Hook | None = None,
) -> MergeReport:
    """Merge the stores ``sources`` into ``dest`` (created when missing).

    Args:
        dest: the destination store directory.
        sources: source store directories, merged in this order.
        move: hard-link segments instead of copying them (copied when the file systems
            differ) and delete each source store once its rows are committed.
        progress: called with ``(bytes done, bytes total)`` while a source's segments
            are placed.

    Raises:
        InvalidInput, NotAStore, SchemaTooNew, StoreLocked: a bad DEST or SRC; nothing
            was changed.
    """
    t0 = time.perf_counter()
    _refuse_urls([dest, *sources])
    dest_path = Path(dest)
    src_paths = [Path(s) for s in sources]
    _check_paths(dest_path, src_paths)
    done = _dest_journal(dest_path)
    plans = [_inspect(p, done, move) for p in src_paths]
    report = MergeReport(str(dest_path), move)
    # durable: a --move deletes each source once its commit is on disk, not before
    with FrameStore.open(dest_path, durability="durable") as st, st.writer_lock():
        report.interrupted_undone = undo_incomplete_merges(st)
        for plan in plans:
            if plan.kind == "merge" and _merged_now(st, plan.source_id):
                # merged since it was checked: by another merge that finished first, or
                # as a copy of an earlier source of this command (same store id)
                plan = replace(plan, kind="already")
            if plan.kind == "already":
                report.sources.append(SourceResult(str(plan.path), "already merged"))
            elif plan.kind == "finish removal":
                remove_store_files(plan.path)
                report.sources.append(SourceResult(str(plan.path), "removal finished"))
            else:
                report.sources.append(_merge_source(st, plan, move, progress, _hook))
        st.sync_segments()
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
