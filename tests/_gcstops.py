"""gc stopped at one of its moments, as a crash would stop it: shared by the rebuild tests
(tests/maintenance/test_rebuild_catalogue.py, test_rebuild_old_gc.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.gc import collect


class GcStopped(Exception):
    pass


def gc_stopped_at(path: Path, phase: str) -> None:
    """``gc --threshold 1`` on ``path`` stopped at ``phase``: one of gc's hook phases
    (``copied``, ``renamed``, ``repointed``, ...) or ``mid-copy`` (half of its copying
    done). Fails the test if gc got past it."""

    def hook(at: str) -> None:
        if at == phase:
            raise GcStopped(at)

    def progress(done: int, total: int) -> None:
        if phase == "mid-copy" and done * 2 >= total:
            raise GcStopped(phase)

    with pytest.raises(GcStopped):
        collect(path, threshold=1.0, progress=progress, _hook=hook)
