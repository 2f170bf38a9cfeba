"""Presets: families, game rows, host scaling, memory budget, the TOML file, tuning."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framestore.errors import FrameStoreError, InvalidInput
from framestore.settings import (
    FAMILY_DEFAULTS,
    GAME_PRESETS,
    HOST_PROFILES,
    PRESETS,
    SETTING_FIELDS,
    HostInfo,
    Settings,
    check_registered,
    default_config_path,
    detect_host,
    explain,
    family_of,
    host_profile,
    load_config,
    save_tuning,
    suggest_tuning,
)
from framestore.settings import resolve as effective_settings
from framestore.settings._userconfig import config_text as _toml_dumps

GiB = 1024**3
MiB = 1024**2

SMALL = HostInfo(cores=2, ram_bytes=4 * GiB, free_ram_bytes=3 * GiB, disk_kind="unknown")
MINIMUM = HostInfo(cores=4, ram_bytes=8 * GiB, free_ram_bytes=6 * GiB, disk_kind="ssd")
GOOD = HostInfo(cores=6, ram_bytes=16 * GiB, free_ram_bytes=12 * GiB, disk_kind="nvme")
BIG = HostInfo(cores=16, ram_bytes=64 * GiB, free_ram_bytes=48 * GiB, disk_kind="nvme")


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch):
    """Never read the developer's own ~/.config/framestore/presets.toml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def resolve(env_id="ALE/Assault-v5", **kw):
    kw.setdefault("host", GOOD)
    return effective_settings(env_id, **kw)


# --------------------------------------------------------------------------- families


@pytest.mark.parametrize(
    "env_id, family",
    [
        ("ALE/Assault-v5", "atari"),
        ("ALE/SomeFutureGame-v9", "atari"),
        ("CarRacing-v3", "box2d"),
        ("LunarLander-v3", "box2d"),
        ("CartPole-v1", "classic_control"),
        ("Pendulum-v1", "classic_control"),
        ("FrozenLake-v1", "toy_text"),
        ("Blackjack-v1", "toy_text"),
        ("Taxi-v3", "toy_text"),  # older version of a known game
        ("not-a-real-env-v0", "other"),
    ],
)
def test_family_of_known_and_unknown_ids(env_id, family):
    assert family_of(env_id) == family


def test_family_of_consults_the_gymnasium_registry_for_ids_not_in_the_tables():
    import gymnasium

    assert "CliffWalkingSlippery-v1" not in GAME_PRESETS
    assert "CliffWalkingSlippery-v1" in gymnasium.registry
    assert family_of("CliffWalkingSlippery-v1") == "toy_text"
    assert "MountainCarContinuous-v0" in gymnasium.registry


def test_game_table_ids_exist_in_the_installed_gymnasium():
    import gymnasium

    missing = [e for e in GAME_PRESETS if not e.startswith("ALE/") and e not in gymnasium.registry]
    assert missing == []


def test_check_registered_knows_gymnasium_and_ale_ids_and_refuses_others():
    check_registered("CliffWalkingSlippery-v1")  # in the registry, not in GAME_PRESETS
    check_registered("ALE/Pong-v5")  # ale-py's ids are registered first
    with pytest.raises(InvalidInput, match=r"^'Nope-v0' is not registered in Gymnasium.*; try X$"):
        check_registered("Nope-v0", hint="try X")
    # Resolution stays lenient: recording an env nobody registered is allowed.
    assert family_of("Nope-v0") == "other"


def test_family_of_rejects_non_ids():
    with pytest.raises(InvalidInput):
        family_of("")


# --------------------------------------------------------------------------- layering


def test_game_row_beats_family():
    r = resolve("CarRacing-v3", host=MINIMUM)
    assert r.family == "box2d"
    assert r.settings.chunk_frames == GAME_PRESETS["CarRacing-v3"]["chunk_frames"]
    assert r.settings.chunk_frames != FAMILY_DEFAULTS["box2d"]["chunk_frames"]
    assert r.sources["chunk_frames"] == "game:CarRacing-v3"
    # Fields the row does not set still come from the family.
    assert r.sources["codec"] == "family:box2d"


def test_codec_values_are_the_measured_ones():
    """Chosen by `bench --reads` (issue 19, docs/BENCHMARKS.md): Atari at zstd level 1
    in 64-frame chunks of 32-frame parts; CarRacing at level 3 in 8-frame chunks of one
    zstd frame; families not measured keep level 3."""
    s = resolve("ALE/Pong-v5", host=MINIMUM).settings
    assert (s.codec, s.level, s.chunk_frames, s.part_frames) == ("zstd", 1, 64, 32)
    s = resolve("CarRacing-v3", host=MINIMUM).settings
    assert (s.codec, s.level, s.chunk_frames, s.part_frames) == ("zstd", 3, 8, 0)
    for family in ("box2d", "toy_text", "classic_control", "other"):
        assert FAMILY_DEFAULTS[family]["level"] == 3


def test_queue_bytes_follows_the_frame_size():
    atari = resolve("ALE/Pong-v5", host=MINIMUM).settings
    frozen = resolve("FrozenLake-v1", host=MINIMUM).settings
    car = resolve("CarRacing-v3", host=MINIMUM).settings
    per_frame = {
        "atari": atari.queue_bytes / atari.queue_frames,
        "frozen": frozen.queue_bytes / frozen.queue_frames,
        "car": car.queue_bytes / car.queue_frames,
    }
    assert per_frame["atari"] < per_frame["frozen"] < per_frame["car"]


def test_sources_cover_every_field_and_explain_lists_them_in_order():
    r = resolve()
    rows = explain(r)
    assert [name for name, _, _ in rows] == list(SETTING_FIELDS)
    for name, value, source in rows:
        assert getattr(r.settings, name) == value
        assert source == r.sources[name]


@pytest.mark.parametrize("env_id", ["ALE/Assault-v5", "CarRacing-v3", "FrozenLake-v1", "Foo-v0"])
def test_bigger_host_gets_larger_buffers(env_id):
    small = resolve(env_id, host=MINIMUM)
    good = resolve(env_id, host=GOOD)
    big = resolve(env_id, host=BIG)
    assert (small.host_profile, good.host_profile, big.host_profile) == (
        "minimum",
        "good",
        "more-than-enough",
    )
    for name in ("hub_buffer", "sink_queue", "queue_frames", "queue_bytes", "batch_size"):
        a, b, c = (getattr(x.settings, name) for x in (small, good, big))
        assert a <= b <= c and a < c, name
    assert small.settings.checkpoint_interval < big.settings.checkpoint_interval
    assert small.sources["hub_buffer"] == "host:minimum"
    assert big.sources["hub_buffer"] == "host:more-than-enough"


def test_host_profile_ranges_hold_for_every_game():
    for env_id in [*GAME_PRESETS, "Foo-v0"]:
        for host in (MINIMUM, GOOD, BIG):
            r = resolve(env_id, host=host)
            prof = HOST_PROFILES[r.host_profile]
            s = r.settings
            assert prof.buffers[0] <= s.hub_buffer <= prof.buffers[1]
            assert s.queue_frames <= prof.buffers[1]
            assert prof.batch[0] <= s.batch_size <= prof.batch[1]
            assert s.checkpoint_interval >= prof.checkpoint_min


def test_host_profile_classification():
    assert host_profile(SMALL) == "minimum"  # below minimum still gets minimum
    assert host_profile(MINIMUM) == "minimum"
    assert host_profile(GOOD) == "good"
    assert host_profile(BIG) == "more-than-enough"
    # Nominal 16 GB machines report a little less.
    assert host_profile(HostInfo(6, int(15.4 * GiB), 10 * GiB, "unknown")) == "good"
    # Lots of RAM but few cores is still minimum.
    assert host_profile(HostInfo(4, 64 * GiB, 60 * GiB, "nvme")) == "minimum"
    # A spinning disk lowers the profile one step.
    assert host_profile(HostInfo(16, 64 * GiB, 48 * GiB, "hdd")) == "good"


def test_minimum_host_suggests_telemetry_lite():
    assert resolve(host=SMALL).lite_suggested
    assert not resolve(host=BIG).lite_suggested
    assert resolve(host=BIG, preset="lite").lite_suggested


def test_forced_profile_and_unknown_profile():
    assert resolve(host=MINIMUM, profile="more-than-enough").host_profile == "more-than-enough"
    with pytest.raises(InvalidInput, match="minimum, good, more-than-enough"):
        resolve(profile="huge")


def test_detect_host_reports_this_machine():
    h = detect_host()
    assert h.cores >= 1
    assert 0 < h.free_ram_bytes <= h.ram_bytes
    assert h.disk_kind in ("nvme", "ssd", "hdd", "unknown")
    assert host_profile(h) in HOST_PROFILES
    # Works on the store's own path too.
    assert detect_host(".").disk_kind in ("nvme", "ssd", "hdd", "unknown")


# --------------------------------------------------------------------------- memory budget


def test_memory_budget_clamps_queue_bytes_on_tiny_free_ram():
    tiny = HostInfo(cores=16, ram_bytes=64 * GiB, free_ram_bytes=200 * MiB, disk_kind="nvme")
    roomy = resolve(host=BIG)
    r = resolve(host=tiny)
    assert r.memory_budget_bytes == 50 * MiB
    assert r.settings.queue_bytes < roomy.settings.queue_bytes
    assert r.settings.queue_bytes + r.settings.lite_bytes <= r.memory_budget_bytes
    assert r.sources["queue_bytes"] == "memory-budget"
    assert ("queue_bytes", r.settings.queue_bytes, "memory-budget") in explain(r)
    # Still room for a few frames.
    assert r.settings.queue_bytes >= 4 * r.frame_bytes_hint


def test_memory_budget_also_clamps_explicit_overrides():
    host = HostInfo(cores=4, ram_bytes=8 * GiB, free_ram_bytes=1 * GiB, disk_kind="ssd")
    r = resolve(host=host, overrides={"queue_bytes": 4 * GiB})
    assert r.settings.queue_bytes + r.settings.lite_bytes <= r.memory_budget_bytes
    assert r.sources["queue_bytes"] == "memory-budget"


def test_memory_budget_leaves_roomy_hosts_alone():
    r = resolve(host=BIG)
    assert "memory-budget" not in r.sources.values()


# --------------------------------------------------------------------------- presets and overrides


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_named_preset_resolves(name):
    r = resolve(preset=name)
    assert r.preset == name
    changed = {f for f, src in r.sources.items() if src == f"preset:{name}"}
    assert bool(changed) == (name != "default")


def test_named_presets_change_what_they_say():
    base = resolve().settings
    low = resolve(preset="low-latency").settings
    fast = resolve(preset="throughput").settings
    assert low.policy == "drop" and low.chunk_frames < base.chunk_frames
    assert fast.chunk_frames > base.chunk_frames and fast.batch_size > base.batch_size
    assert fast.durability == "fast"


def test_unknown_preset_names_the_choices():
    with pytest.raises(InvalidInput, match="choose one of default, low-latency, throughput, lite"):
        resolve(preset="turbo")


def test_overrides_win_and_none_means_unset():
    r = resolve(overrides={"codec": "png", "durability": None, "batch_size": 7})
    assert r.settings.codec == "png" and r.sources["codec"] == "override"
    assert r.settings.batch_size == 7
    assert r.sources["durability"] != "override"


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"codec": "gzip"}, "codec must be one of zstd, png, raw"),
        ({"policy": "wait"}, "policy must be one of block, drop"),
        ({"durability": "safe"}, "durable, balanced, fast"),
        ({"queue_frames": 0}, "queue_frames must be an integer"),
        ({"queue_frames": True}, "queue_frames must be an integer"),
        ({"level": 30}, "level must be an integer from -7 to 22"),
        ({"block_timeout": float("nan")}, "block_timeout"),
        ({"queue_frame": 10}, "did you mean 'queue_frames'"),
    ],
)
def test_bad_overrides_raise_invalid_input(overrides, match):
    with pytest.raises(InvalidInput, match=match) as info:
        resolve(overrides=overrides)
    assert isinstance(info.value, FrameStoreError)


# --------------------------------------------------------------------------- TOML file


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_file_applies_default_then_game_table_and_explain_names_it(tmp_path):
    cfg = write(
        tmp_path / "presets.toml",
        """
[default]
codec = "raw"
batch_size = 100

["ALE/Assault-v5"]
batch_size = 200
preset = "low-latency"
""",
    )
    r = resolve(config_file=cfg)
    assert r.settings.codec == "raw"
    assert r.settings.batch_size == 200
    assert r.preset == "low-latency"
    assert ("batch_size", 200, f"config:{cfg}") in explain(r)
    assert r.config_file == cfg
    # Another env gets [default] only, and an explicit preset beats the file's.
    other = resolve("ALE/Pong-v5", config_file=cfg, preset="default")
    assert other.settings.batch_size == 100 and other.preset == "default"
    # Overrides beat the file.
    assert resolve(config_file=cfg, overrides={"batch_size": 5}).settings.batch_size == 5


def test_default_config_path_honours_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = default_config_path()
    assert path == tmp_path / "framestore" / "presets.toml"
    path.parent.mkdir()
    write(path, '[default]\ncodec = "png"\n')
    r = resolve()
    assert r.settings.codec == "png" and r.sources["codec"] == f"config:{path}"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # ignored, per the XDG spec
    assert default_config_path().is_absolute()


def test_frame_bytes_hint_from_the_file_sizes_queue_bytes(tmp_path):
    cfg = write(tmp_path / "p.toml", '["MyEnv-v0"]\nframe_bytes_hint = 1000\n')
    r = resolve("MyEnv-v0", host=MINIMUM, config_file=cfg)
    assert r.frame_bytes_hint == 1000
    assert r.settings.queue_bytes == r.settings.queue_frames * 1000


@pytest.mark.parametrize(
    "text, match",
    [
        ("[default]\nqueue_frame = 10\n", r"\[default\]: unknown key 'queue_frame'.*valid keys"),
        ('["ALE/Assault-v5"]\ncodec = "lz4"\n', r"\[ALE/Assault-v5\]: codec must be one of"),
        ('[default]\nbatch_size = "64"\n', "batch_size must be an integer"),
        ('[default]\npreset = "turbo"\n', "unknown preset 'turbo'; choose one of"),
        ('codec = "raw"\n', "must be a table"),
        ('[default\ncodec = "raw"\n', "not valid TOML"),
    ],
)
def test_bad_toml_raises_invalid_input_naming_file_and_key(tmp_path, text, match):
    cfg = write(tmp_path / "presets.toml", text)
    with pytest.raises(InvalidInput, match=match) as info:
        resolve(config_file=cfg)
    assert str(cfg) in str(info.value)


def test_missing_explicit_config_file_is_an_error_but_missing_default_is_not(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        resolve(config_file=tmp_path / "nope.toml")
    assert not default_config_path().exists()
    assert load_config() == {}


# --------------------------------------------------------------------------- tuning


def run(env_id="ALE/Assault-v5", **kw):
    stats = {
        "env_id": env_id,
        "queue_high_water_frames": 100,
        "queue_high_water_bytes": 100 * 100_800,
        "queue_frames": 1000,
        "queue_bytes": 1000 * 100_800,
        "max_flush_ms": 20.0,
        "dropped": 0,
        "blocked_s": 0.0,
        "batch_size": 128,
    }
    stats.update(kw)
    return stats


def test_suggest_tuning_grows_bounds_after_drops():
    out = suggest_tuning([run(queue_high_water_frames=500, dropped=3)])
    assert out["ALE/Assault-v5"]["queue_frames"] == 2000
    assert out["ALE/Assault-v5"]["queue_bytes"] == 2000 * 100_800


def test_suggest_tuning_grows_bounds_at_high_water():
    out = suggest_tuning([run(queue_high_water_bytes=int(0.9 * 1000 * 100_800))])
    assert out["ALE/Assault-v5"]["queue_bytes"] == 2000 * 100_800


def test_suggest_tuning_shrinks_after_tiny_high_water():
    out = suggest_tuning([run(queue_high_water_frames=150, queue_high_water_bytes=150 * 100_800)])
    s = out["ALE/Assault-v5"]
    assert s["queue_frames"] == 300
    assert s["queue_bytes"] == max(300 * 100_800, 16 * MiB)


def test_suggest_tuning_keeps_middling_runs_and_lowers_batch_on_slow_flush():
    assert suggest_tuning([run(queue_high_water_frames=500)]) == {}
    out = suggest_tuning([run(queue_high_water_frames=500, max_flush_ms=1000.0)])
    assert out == {"ALE/Assault-v5": {"batch_size": 32}}


def test_suggest_tuning_groups_runs_per_env():
    out = suggest_tuning(
        [
            run(queue_high_water_frames=10),
            run(queue_high_water_frames=900),  # one busy run: grow, not shrink
            run("CartPole-v1", queue_high_water_frames=10, queue_high_water_bytes=10),
        ]
    )
    assert out["ALE/Assault-v5"]["queue_frames"] == 2000
    assert out["CartPole-v1"]["queue_frames"] == 64  # floor


@pytest.mark.parametrize(
    "bad, match",
    [({"dropped": -1}, "dropped must be a non-negative"), ({"queue_frames": 0}, "positive")],
)
def test_suggest_tuning_rejects_bad_stats(bad, match):
    with pytest.raises(InvalidInput, match=match):
        suggest_tuning([run(**bad)])
    incomplete = run()
    del incomplete["blocked_s"]
    with pytest.raises(InvalidInput, match="missing 'blocked_s'"):
        suggest_tuning([incomplete])


def test_save_tuning_round_trips_and_preserves_other_tables(tmp_path):
    (tmp_path / "cfg").mkdir()
    cfg = write(
        tmp_path / "cfg" / "presets.toml",
        """
[default]
codec = "png"
block_timeout = 2.5

["ALE/Assault-v5"]
level = 5
queue_frames = 1
""",
    )
    suggestions = suggest_tuning([run(dropped=1)])
    assert save_tuning(suggestions, cfg) == cfg
    data = tomllib.loads(cfg.read_text())
    assert data["default"] == {"codec": "png", "block_timeout": 2.5}
    assert data["ALE/Assault-v5"]["level"] == 5
    assert data["ALE/Assault-v5"]["queue_frames"] == 2000
    assert not (cfg.parent / "presets.toml.partial").exists()
    # The tuned file is a valid presets file.
    r = resolve(config_file=cfg)
    assert r.settings.queue_frames == 2000 and r.settings.codec == "png"


def test_save_tuning_creates_the_default_file(tmp_path):
    path = save_tuning({"CartPole-v1": {"batch_size": 16}})
    assert path == default_config_path() and path.exists()
    assert tomllib.loads(path.read_text()) == {"CartPole-v1": {"batch_size": 16}}


def test_save_tuning_refuses_bad_suggestions_and_bad_existing_files(tmp_path):
    cfg = tmp_path / "presets.toml"
    with pytest.raises(InvalidInput, match="unknown key 'bogus'"):
        save_tuning({"CartPole-v1": {"bogus": 1}}, cfg)
    assert not cfg.exists()
    write(cfg, "[default]\nbogus = 1\n")
    with pytest.raises(InvalidInput):
        save_tuning({"CartPole-v1": {"batch_size": 16}}, cfg)
    assert cfg.read_text() == "[default]\nbogus = 1\n"  # untouched


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
)


@given(st.dictionaries(st.text(min_size=1), st.dictionaries(st.text(min_size=1), scalars)))
def test_toml_writer_round_trips_through_tomllib(tables):
    assert tomllib.loads(_toml_dumps(tables)) == tables


def test_settings_defaults_are_valid_for_the_writer():
    # Settings is a plain frozen dataclass the recorder can asdict() into run config.
    from dataclasses import asdict

    assert set(asdict(Settings())) == set(SETTING_FIELDS)
