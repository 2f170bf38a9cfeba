"""Action, info and reward encoding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from gymnasium import spaces as gs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from telemetry.errors import InfoTooLarge, InvalidInput
from telemetry.spaces import (
    INFO_LIMIT_BYTES,
    check_reward,
    decode_action,
    decode_info,
    encode_action,
    encode_info,
    space_spec,
)

# ------------------------------------------------------------------ strategies

int_dtypes = st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8])
float_dtypes = st.sampled_from([np.float16, np.float32, np.float64])
shapes = hnp.array_shapes(min_dims=1, max_dims=3, max_side=3)


@st.composite
def discrete_spaces(draw):
    dtype = draw(st.sampled_from([np.int64, np.int32, np.int16]))
    return gs.Discrete(draw(st.integers(1, 100)), start=draw(st.integers(-50, 50)), dtype=dtype)


@st.composite
def box_spaces(draw):
    shape = draw(shapes)
    if draw(st.booleans()):
        dtype = draw(float_dtypes)
        if draw(st.booleans()):
            return gs.Box(-np.inf, np.inf, shape=shape, dtype=dtype)
        return gs.Box(-1.0, 2.5, shape=shape, dtype=dtype)
    return gs.Box(-5, 5, shape=shape, dtype=draw(st.sampled_from([np.int8, np.int32, np.int64])))


@st.composite
def multidiscrete_spaces(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=3))
    nvec = draw(hnp.arrays(np.int64, shape, elements=st.integers(1, 9)))
    return gs.MultiDiscrete(nvec, dtype=draw(st.sampled_from([np.int64, np.int32])))


@st.composite
def multibinary_spaces(draw):
    if draw(st.booleans()):
        return gs.MultiBinary(draw(st.integers(1, 8)))
    return gs.MultiBinary(list(draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=3))))


leaf_spaces = st.one_of(
    discrete_spaces(),
    box_spaces(),
    multidiscrete_spaces(),
    multibinary_spaces(),
    st.just(gs.Text(5)),
)


def _extend(children):
    return st.one_of(
        st.lists(children, min_size=1, max_size=3).map(gs.Tuple),
        st.dictionaries(
            st.text("abcxyz", min_size=1, max_size=4), children, min_size=1, max_size=3
        ).map(gs.Dict),
    )


any_space = st.recursive(leaf_spaces, _extend, max_leaves=6)


def strict_json(text):
    """Parse ``text``, failing on JSON's non-standard NaN/Infinity literals."""

    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name} in {text!r}")

    return json.loads(text, parse_constant=reject)


def assert_same(a, b):
    """Equal values AND equal types, recursively (numpy dtype and shape included)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype
        assert a == b or (np.isnan(a) and np.isnan(b))
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


# ------------------------------------------------------------------ actions with a space


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(space=any_space, seed=st.integers(0, 2**32 - 1))
def test_action_round_trip_with_space(space, seed):
    space.seed(seed)
    action = space.sample()
    spec = json.loads(json.dumps(space_spec(space)))  # the spec survives runs.config
    text = encode_action(action, space)
    strict_json(text)
    assert_same(decode_action(text, spec), action)


def test_discrete_is_compact_and_typed():
    space = gs.Discrete(6)
    assert encode_action(3, space) == "3"
    assert encode_action(np.int64(3), space) == "3"
    decoded = decode_action("3", space_spec(space))
    assert type(decoded) is np.int64 and decoded == 3


def test_box_actions_are_float32_arrays():
    space = gs.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    out = decode_action(encode_action(np.array([0.1, -0.5]), space), space_spec(space))
    assert out.dtype == np.float32 and out.shape == (2,)
    np.testing.assert_array_equal(out, np.array([0.1, -0.5], dtype=np.float32))
    assert decode_action(encode_action([0.25, 1.0], space), space_spec(space)).dtype == np.float32


def test_box_non_finite_bounds_are_strict_json():
    space = gs.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
    action = np.array([np.inf, -np.inf, 1.5], dtype=np.float32)
    text = encode_action(action, space)
    strict_json(text)
    strict_json(json.dumps(space_spec(space)))
    assert_same(decode_action(text, space_spec(space)), action)


@pytest.mark.parametrize(
    ("space", "action", "match"),
    [
        (gs.Discrete(4), 4, "not in Discrete"),
        (gs.Discrete(4), 1.0, "not in Discrete"),
        (gs.Discrete(4), True, "not in Discrete"),
        (gs.Box(-1, 1, (2,), np.float32), np.array([0.0, np.nan]), "bounds"),
        (gs.Box(-1, 1, (2,), np.float32), np.array([0.0, 2.0]), "bounds"),
        (gs.Box(-1, 1, (2,), np.float32), np.zeros(3), "shape"),
        (gs.Box(-5, 5, (1,), np.int64), np.array([0.7]), "does not convert"),
        (gs.MultiDiscrete([3, 3]), [1, 3], "not in MultiDiscrete"),
        (gs.MultiBinary(3), [0, 2, 1], "not in MultiBinary"),
        (gs.Tuple([gs.Discrete(2), gs.Discrete(3)]), (1, 5), r"action\[1\]"),
        (gs.Dict({"a": gs.Discrete(2)}), {"b": 0}, "expected keys"),
        (gs.Dict({"a": gs.Tuple([gs.Discrete(2)])}), {"a": (7,)}, r"action\['a'\]\[0\]"),
    ],
)
def test_bad_actions_are_rejected(space, action, match):
    with pytest.raises(InvalidInput, match=match):
        encode_action(action, space)


def test_fallback_space_uses_self_describing_encoding():
    space = gs.Sequence(gs.Discrete(3), seed=1)
    action = space.sample()
    spec = space_spec(space)
    assert spec["type"] == "other"
    assert_same(decode_action(encode_action(action, space), spec), action)


def test_none_action_is_the_reset_row():
    assert encode_action(None) is None and encode_action(None, gs.Discrete(2)) is None
    assert decode_action(None) is None


# ------------------------------------------------------------------ actions without a space

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    hnp.from_dtype(np.dtype(np.float32)).map(np.float32),
    hnp.from_dtype(np.dtype(np.int16)).map(np.int16),
    hnp.from_dtype(np.dtype(np.uint8)).map(np.uint8),
    st.booleans().map(np.bool_),
    hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int8, np.uint16, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=3),
    ),
)
untyped = st.recursive(
    scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.lists(c, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), c, max_size=3),
        st.dictionaries(st.integers(-3, 3), c, max_size=3),
        st.just({"$t": 1}),
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, database=None)
@given(value=untyped)
def test_untyped_round_trip_preserves_types(value):
    if value is None:
        return
    text = encode_action(value)
    strict_json(text)
    assert_same(decode_action(text), value)


def test_untyped_rejects_objects():
    with pytest.raises(InvalidInput, match=r"action\[1\].*object"):
        encode_action([1, object()])


# ------------------------------------------------------------------ info

ATARI_INFO = {"lives": 3, "episode_frame_number": 1234, "frame_number": 98765}


def test_atari_info_round_trip():
    assert decode_info(encode_info(ATARI_INFO)) == ATARI_INFO


def test_info_converts_numpy_and_containers():
    info = {
        "lives": np.int64(3),
        "x": np.float32(0.5),
        "pos": np.array([[1, 2], [3, 4]], dtype=np.uint8),
        "t": (1, 2),
        "tags": {"b", "a"},
        "raw": b"\x00\xff",
        "bad": float("nan"),
        "big": np.array([np.inf, 1.0]),
        "$weird": {"$bytes": "not bytes"},
        3: "int key",
    }
    out = decode_info(encode_info(info))
    assert out == {
        "lives": 3,
        "x": 0.5,
        "pos": [[1, 2], [3, 4]],
        "t": [1, 2],
        "tags": ["a", "b"],
        "raw": b"\x00\xff",
        "bad": out["bad"],
        "big": [math.inf, 1.0],
        "$weird": {"$bytes": "not bytes"},
        "3": "int key",
    }
    assert math.isnan(out["bad"])


def test_info_fast_path_output_is_compact():
    assert encode_info(ATARI_INFO) == json.dumps(ATARI_INFO, separators=(",", ":"))
    assert encode_info(None) == "{}" and decode_info(None) == {}


def test_huge_info_is_too_large():
    with pytest.raises(InfoTooLarge) as info:
        encode_info({"frame": np.zeros((210, 160, 3), np.uint8)})
    assert info.value.limit == INFO_LIMIT_BYTES
    with pytest.raises(InfoTooLarge):
        encode_info({"log": "x" * (INFO_LIMIT_BYTES + 1)})
    assert encode_info({"log": "x" * 100}, limit=200)
    with pytest.raises(InfoTooLarge):
        encode_info({"log": "x" * 300}, limit=200)


def test_unserialisable_info_names_key_path():
    class Thing:
        pass

    with pytest.raises(InvalidInput, match=r"info\['agent'\]\['pos'\].*Thing"):
        encode_info({"agent": {"pos": Thing()}})
    with pytest.raises(InvalidInput, match=r"info\['xs'\]\[1\]"):
        encode_info({"xs": [1, object()]})
    with pytest.raises(InvalidInput):
        encode_info([1, 2])


# ------------------------------------------------------------------ reward


@pytest.mark.parametrize("reward", [0, 1.5, -3, np.float32(2.0), np.int64(7), np.array(1.0)])
def test_reward_accepted(reward):
    assert check_reward(reward) == float(reward)
    assert type(check_reward(reward)) is float


@pytest.mark.parametrize(
    "reward", [float("nan"), float("inf"), -np.inf, np.float32("nan"), "1", None, 1j, [1.0]]
)
def test_reward_rejected(reward):
    with pytest.raises(InvalidInput):
        check_reward(reward)


@pytest.mark.parametrize(
    "space, actions",
    [
        (
            gs.Discrete(7),
            [0, 6, np.int64(3), np.uint8(2), 7, -1, True, np.bool_(True), 2.0, "1", None],
        ),
        (gs.Discrete(3, start=-1), [-1, 1, 2, np.int32(-1), -2]),
        (
            gs.Box(-1.0, 1.0, (3,), np.float32),
            [
                np.array([0.1, -0.5, 1.0], np.float32),
                np.array([0.1, -0.5, 1.5], np.float32),
                np.array([np.nan, 0, 0], np.float32),
                np.array([0.1, 0.2, 0.3], np.float64),
                np.array([0.1, 0.2], np.float32),
                [0.1, 0.2, 0.3],
            ],
        ),
        (gs.Box(-np.inf, np.inf, (2,), np.float32), [np.array([np.inf, 1.0], np.float32)]),
    ],
)
def test_action_encoder_fast_paths_equal_encode_action(space, actions):
    from telemetry import action_encoder

    enc = action_encoder(space)
    for a in actions:
        try:
            want = encode_action(a, space)
        except InvalidInput as e:
            with pytest.raises(type(e)):
                enc(a)
        else:
            assert enc(a) == want, a
