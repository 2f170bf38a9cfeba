"""framestore rm and framestore info."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
from click.testing import CliRunner

from framestore import FrameStore
from framestore.disk.segments import VERSION
from tools.cli import cli
from tools.info import store_info

SPACE = gym.spaces.Discrete(7)
FRAMES = 61  # rows per episode


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def three_episodes(store_path, assault_frames):
    """Run 1 with episodes 1 and 2, run 2 with episode 3; FRAMES rows each."""
    ids = []
    with FrameStore.open(store_path) as st:
        for run_eps in (2, 1):
            with st.recorder("ALE/Assault-v5", action_space=SPACE, render_fps=30) as rec:
                for e in range(run_eps):
                    ids.append(rec.begin_episode(seed=e))
                    rec.record_step(assault_frames[0])
                    for i in range(1, FRAMES):
                        rec.record_step(assault_frames[i], action=i % 7, reward=1.0)
                    rec.end_episode()
    return store_path, ids


def live_ids(path):
    with FrameStore.open(path, readonly=True) as st:
        return [e.id for e in st.episodes()]


def ls_ids(path):
    result = run_cli("ls", path, "--json")
    assert result.exit_code == 0, result.output
    return [e["id"] for e in json.loads(result.stdout)["episodes"]]


def test_rm_marks_episodes_deleted(three_episodes):
    path, ids = three_episodes
    result = run_cli("rm", path, "--episode", ids[0], "--episode", ids[2])
    assert result.exit_code == 0, result.output
    assert f"deleted 2 episode(s): {ids[0]}, {ids[2]}" in result.output
    assert "framestore gc" in result.output
    assert live_ids(path) == ls_ids(path) == [ids[1]]
    with FrameStore.open(path, readonly=True) as st:
        statuses = {e.id: e.status for e in st.episodes(include_deleted=True)}
    assert statuses == {ids[0]: "deleted", ids[1]: "complete", ids[2]: "deleted"}


def test_rm_run_and_json(three_episodes):
    path, ids = three_episodes
    result = run_cli("rm", path, "--run", 1, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [e["id"] for e in data["deleted"]] == ids[:2] and data["dry_run"] is False
    assert data["bytes"] > 0
    assert live_ids(path) == [ids[2]]


def test_rm_dry_run_changes_nothing(three_episodes):
    path, ids = three_episodes
    result = run_cli("rm", path, "--run", 1, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"would delete 2 episode(s): {ids[0]}, {ids[1]}" in result.output
    assert "gc" not in result.output
    assert live_ids(path) == ls_ids(path) == ids


@pytest.mark.parametrize(
    "args",
    [
        ("--episode", 1, "--episode", 99),
        ("--run", 7),
    ],
)
def test_rm_unknown_id_deletes_nothing(three_episodes, args):
    path, ids = three_episodes
    result = run_cli("rm", path, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("framestore: error:")
    assert "99" in lines[0] or "7" in lines[0]
    assert live_ids(path) == ids


def test_rm_needs_exactly_one_selector(three_episodes):
    path, ids = three_episodes
    assert run_cli("rm", path).exit_code == 2
    assert run_cli("rm", path, "--run", 1, "--episode", 1).exit_code == 2
    assert live_ids(path) == ids


def test_info_agrees_with_the_recording(three_episodes):
    path, ids = three_episodes
    with FrameStore.open(path, readonly=True) as st:
        info = store_info(st)
    assert info["runs"] == 2
    assert info["episodes"] == {"live": 3, "deleted": 0, "by_status": {"complete": 3}}
    assert info["steps"] == info["frames"] == 3 * FRAMES
    assert info["raw_frame_bytes"] == 3 * FRAMES * 210 * 160 * 3
    seg = info["segments"]
    assert seg["count"] >= 1 and sum(seg["by_state"].values()) == seg["count"]
    assert 0 < seg["live_bytes"] <= seg["bytes"]
    assert info["database"]["bytes"] > 0
    assert info["bytes_on_disk"] >= seg["bytes"] + info["database"]["bytes"]
    assert info["compression_ratio"] > 10
    assert info["durability"] == {"balanced": 2}
    assert info["schema"]["version"] >= 1 and info["schema"]["pending_migrations"] == []
    assert info["format_version"] == VERSION == 3

    result = run_cli("rm", path, "--episode", ids[0])
    assert result.exit_code == 0, result.output
    result = run_cli("info", path, "--json")
    assert result.exit_code == 0, result.output
    after = json.loads(result.stdout)
    assert after["episodes"]["live"] == 2 and after["episodes"]["deleted"] == 1
    assert after["steps"] == after["frames"] == 2 * FRAMES
    assert after["segments"]["live_bytes"] < seg["live_bytes"]
    assert after["segments"]["dead_bytes"] > seg["dead_bytes"]

    result = run_cli("info", path)
    assert result.exit_code == 0, result.output
    assert "episodes     2 live, 1 deleted" in result.output
    assert "compression" in result.output and "schema" in result.output


def test_info_on_missing_store_is_one_line(tmp_path):
    result = run_cli("info", tmp_path / "nope")
    assert result.exit_code == 2
    assert result.output.strip().startswith("framestore: error:")
    assert len(result.output.strip().splitlines()) == 1


def test_sizes_mean_the_same_in_record_info_and_gc(three_episodes):
    """One definition of "on disk" and "reclaimable": a fresh store has no dead bytes
    (file headers and seals are overhead, never reclaimable); what ``info`` calls
    reclaimable is what the default ``gc`` frees, and it says what the rest needs."""
    path, ids = three_episodes
    fresh = json.loads(run_cli("info", path, "--json").stdout)["segments"]
    assert fresh["dead_bytes"] == fresh["reclaimable_bytes"] == 0
    assert fresh["bytes"] == fresh["live_bytes"] + fresh["overhead_bytes"]
    assert "0 B dead" in run_cli("info", path).output

    # run 2 (episode 3) fills a segment of its own; episode 1 is half of run 1's
    assert run_cli("rm", path, "--episode", ids[0], "--episode", ids[2]).exit_code == 0
    before = json.loads(run_cli("info", path, "--json").stdout)["segments"]
    assert before["dead_bytes"] > 0 and before["reclaimable_bytes"] > 0
    gc = json.loads(run_cli("gc", path, "--json").stdout)
    assert gc["segment_bytes_reclaimed"] == before["reclaimable_bytes"]
    after = json.loads(run_cli("info", path, "--json").stdout)["segments"]
    assert after["reclaimable_bytes"] == 0
    # gc freed dead bytes and the overhead of the files it deleted, nothing else
    waste = lambda seg: seg["dead_bytes"] + seg["overhead_bytes"]  # noqa: E731
    assert waste(after) == waste(before) - before["reclaimable_bytes"]
    if after["dead_bytes"]:  # left by the threshold: info says so, and how to get it
        # (the rewrite also frees the episode descriptions several segments repeated:
        # format 3 writes one per segment an episode spans)
        assert after["reclaimable_all_bytes"] >= after["dead_bytes"]
        text = run_cli("info", path).output
        assert "under 50% live" in text and "gc --threshold 1" in text
        full = json.loads(run_cli("gc", path, "--threshold", "1", "--json").stdout)
        assert full["segment_bytes_reclaimed"] == after["reclaimable_all_bytes"]
        after = json.loads(run_cli("info", path, "--json").stdout)["segments"]
    assert after["dead_bytes"] == after["reclaimable_all_bytes"] == 0


def test_record_reports_on_disk_as_info_does(tmp_path):
    path = tmp_path / "r.store"
    result = run_cli("record", path, "--env", "CartPole-v1", "--episodes", "2", "--json")
    assert result.exit_code == 0, result.output
    recorded = json.loads(result.stdout)
    info = json.loads(run_cli("info", path, "--json").stdout)
    assert recorded["bytes_on_disk"] == info["bytes_on_disk"]
    assert (
        recorded["bytes_out"] <= info["segments"]["live_bytes"] + info["segments"]["overhead_bytes"]
    )


def test_rm_says_what_gc_will_reclaim(three_episodes):
    """rm said "run gc to reclaim the space" and gc then reclaimed 0 B (its default
    threshold leaves segments over half live): rm now says what gc frees and, when the
    threshold leaves dead bytes, what `--threshold 1` frees."""
    path, ids = three_episodes
    text = run_cli("rm", path, "--episode", ids[0]).output
    info = json.loads(run_cli("info", path, "--json").stdout)["segments"]
    from tools.text import human_bytes

    if info["reclaimable_bytes"] < info["reclaimable_all_bytes"]:
        assert "--threshold 1` reclaims " + human_bytes(info["reclaimable_all_bytes"]) in text
    assert f"`framestore gc {path}` reclaims" in text
    if info["reclaimable_bytes"]:
        assert human_bytes(info["reclaimable_bytes"]) in text
    else:
        assert "reclaims nothing yet" in text


def test_record_with_seeds_recorded_before_says_so(tmp_path):
    path = tmp_path / "s.store"
    args = ("record", path, "--env", "ALE/Assault-v5", "--max-steps", "3", "--episodes", "2")
    first = run_cli(*args, "--json")
    assert json.loads(first.stdout)["seeds_recorded_before"] == []
    again = run_cli(*args)
    assert again.exit_code == 0 and "seed(s) 0, 1 already" in again.output
    other = run_cli(*args, "--seed", "1", "--json")
    assert json.loads(other.stdout)["seeds_recorded_before"] == [1]
