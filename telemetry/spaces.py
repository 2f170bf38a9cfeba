"""Lossless JSON encoding of actions, step ``info`` and rewards.

Everything here runs on the producer thread before an event exists, so bad input is
rejected (``InvalidInput``) where the caller can see it, never in the sink thread.

Two action encodings, chosen by whether a space is given:

* **With a space** (``encode_action(a, space)``): compact JSON that follows the space
  (``3`` for Discrete, ``[0.5, -1.0]`` for Box, lists for Tuple, objects for Dict). The
  reader needs the run's :func:`space_spec` (stored in ``runs.config``) to decode it, and
  gets the space's own types back: ``Discrete`` -> numpy integer scalar of the space's
  dtype, ``Box``/``MultiDiscrete``/``MultiBinary`` -> arrays of the space's dtype and
  shape, ``Tuple`` -> tuple, ``Dict`` -> dict, ``Text`` -> str. Box actions are recorded
  in the space's dtype (a float64 action for a float32 Box is stored as float32, which is
  what the space defines; integer Boxes accept only values that convert exactly).
* **Without a space**: self-describing JSON in which plain JSON values stand for
  themselves and everything else is an object tagged ``"$t"``: numpy scalars and arrays
  (dtype and shape kept), tuples, non-finite floats, bytes, and dicts whose keys are not
  plain strings. ``decode_action(text)`` returns the same Python/numpy types.

Non-finite floats are never written as JSON's non-standard ``NaN``/``Infinity`` (SQLite's
JSON functions reject them); they are written as the strings ``"nan"``, ``"inf"`` and
``"-inf"`` inside arrays whose dtype is known, or tagged elsewhere.

``info`` is encoded for reading and querying, not for type fidelity: numpy values become
plain numbers and lists, tuples become lists, sets become sorted lists, bytes become
``{"$bytes": "<base64>"}`` and non-finite floats ``{"$float": "nan"}``. User keys starting
with ``$`` are escaped by doubling it. The encoded size is limited to
:data:`INFO_LIMIT_BYTES`.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from json.encoder import c_make_encoder, encode_basestring
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InfoTooLarge, InvalidInput

if TYPE_CHECKING:  # imported where spaces are inspected: reading needs no gymnasium
    from gymnasium import spaces as gs


#: Largest ``info`` accepted, in bytes of UTF-8 JSON (64 KiB). A step row should stay a
#: few hundred bytes; anything big belongs in frames or the user's own files.
INFO_LIMIT_BYTES = 64 * 1024

_TAG = "$t"
#: Deepest nesting accepted in ``info`` (a self-referential dict is infinitely deep).
MAX_DEPTH = 64
_TOO_DEEP = "{what} is nested more than 64 levels deep or refers to itself; store flat data"
_NUMERIC_KINDS = "biuf"
_SEPARATORS = (",", ":")


# --------------------------------------------------------------------------- helpers


def _float_out(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _array_values(arr: np.ndarray) -> Any:
    """Nested lists of ``arr`` with non-finite floats as strings."""
    values = arr.tolist()
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        values = _replace_nonfinite(values)
    return values


def _replace_nonfinite(values: Any) -> Any:
    if isinstance(values, list):
        return [_replace_nonfinite(v) for v in values]
    return _float_out(values) if isinstance(values, float) else values


def _array_from(values: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    # numpy parses "nan"/"inf"/"-inf" when the target dtype is a float.
    arr = np.array(values, dtype=dtype)
    return arr.reshape(shape)


# One encoder for every call: json.dumps with options builds a new one each time, which
# is a third of the cost of encoding a small info on the producer thread.
_ENCODER = json.JSONEncoder(separators=_SEPARATORS, allow_nan=False, ensure_ascii=False)


# The C encoder behind ``_ENCODER``, made once with the same options but no circular
# check (``JSONEncoder.encode`` makes a new one, and a markers dict, on every call: half
# the cost of a small info). The output is the same; anything it raises (a circular or
# too deep structure, a value JSON cannot hold) is raised again by ``_ENCODER`` itself,
# so errors stay ``_ENCODER``'s. None where the C accelerator is missing.
_FAST_ENCODER = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None,
        _ENCODER.default,
        encode_basestring,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        _ENCODER.sort_keys,
        _ENCODER.skipkeys,
        _ENCODER.allow_nan,
    )  # fmt: skip
)


def _dumps(obj: Any) -> str:
    if _FAST_ENCODER is not None:
        try:
            return "".join(_FAST_ENCODER(obj, 0))
        except Exception:  # noqa: BLE001 - raised again, with _ENCODER's message, below
            pass
    return _ENCODER.encode(obj)


def _where(path: str) -> str:
    return path or "value"


# --------------------------------------------------------------------------- space specs


def space_spec(space: gs.Space) -> dict[str, Any]:
    """Describe a Gymnasium space as JSON-able data.

    The description is enough to decode actions encoded with the space, without the
    space object (readers only have the database). Spaces without a dedicated entry get
    ``{"type": "other", ...}`` and their actions use the self-describing encoding.

    Args:
        space: Any Gymnasium space.

    Returns:
        A dict with a ``"type"`` key: ``Discrete`` (n, start, dtype), ``Box`` (shape,
        dtype, low, high), ``MultiDiscrete`` (nvec, start, dtype), ``MultiBinary`` (n,
        dtype), ``Tuple`` (spaces), ``Dict`` (spaces, an object in key order), ``Text``
        (min_length, max_length, charset) or ``other`` (class, repr).
    """
    from gymnasium import spaces as gs  # here: reading a store never needs gymnasium

    if isinstance(space, gs.Discrete):
        return {
            "type": "Discrete",
            "n": int(space.n),
            "start": int(space.start),
            "dtype": space.dtype.name,
        }
    if isinstance(space, gs.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": space.dtype.name,
            "low": _array_values(space.low),
            "high": _array_values(space.high),
        }
    if isinstance(space, gs.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": space.dtype.name,
        }
    if isinstance(space, gs.MultiBinary):
        n = space.n
        return {
            "type": "MultiBinary",
            "n": int(n) if np.ndim(n) == 0 else [int(v) for v in n],
            "dtype": space.dtype.name,
        }
    if isinstance(space, gs.Tuple):
        return {"type": "Tuple", "spaces": [space_spec(s) for s in space.spaces]}
    if isinstance(space, gs.Dict) and all(isinstance(k, str) for k in space.spaces):
        return {"type": "Dict", "spaces": {k: space_spec(s) for k, s in space.spaces.items()}}
    if isinstance(space, gs.Text):
        return {
            "type": "Text",
            "min_length": int(space.min_length),
            "max_length": int(space.max_length),
            "charset": "".join(sorted(space.character_set)),
        }
    cls = type(space)
    return {"type": "other", "class": f"{cls.__module__}.{cls.__qualname__}", "repr": repr(space)}


# --------------------------------------------------------------------------- actions


def encode_action(action: Any, space: gs.Space | None = None) -> str | None:
    """Encode an action as JSON text, checking it against ``space`` when given.

    Args:
        action: The action passed to ``env.step``; ``None`` encodes as ``None`` (the
            reset row has no action).
        space: The env's action space. With it, the encoding is compact and decoded with
            ``space_spec(space)``; without it, the encoding is self-describing.

    Returns:
        JSON text, or ``None`` for a ``None`` action.

    Raises:
        InvalidInput: The action is not in ``space``, or (without a space) holds a value
            that has no lossless encoding.
    """
    if action is None:
        return None
    try:
        if space is None:
            return _dumps(_tagged(action, "action"))
        return _dumps(_by_space(action, space, "action"))
    except RecursionError:
        raise InvalidInput(_TOO_DEEP.format(what="action")) from None


def decode_action(text: str | None, spec: Mapping[str, Any] | None = None) -> Any:
    """Decode an action encoded by :func:`encode_action`.

    Args:
        text: JSON text, or ``None``.
        spec: The ``space_spec`` of the space the action was encoded with, or ``None``
            for the self-describing encoding.

    Returns:
        The action, with the types described in the module docstring.

    Raises:
        InvalidInput: ``text`` is not valid JSON or does not match ``spec``.
    """
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"action is not valid JSON: {exc}") from exc
    try:
        if spec is None:
            return _untagged(data)
        return _from_space(data, spec)
    except InvalidInput:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidInput(f"action {text[:80]!r} does not match its space spec: {exc}") from exc


def _not_in(action: Any, space: gs.Space, path: str, why: str = "") -> InvalidInput:
    detail = f" ({why})" if why else ""
    return InvalidInput(f"{_where(path)}: {action!r} is not in {space}{detail}")


def _by_space(action: Any, space: gs.Space, path: str) -> Any:
    from gymnasium import spaces as gs  # imported by then (the caller holds a space)

    if isinstance(space, gs.Discrete):
        if isinstance(action, bool | np.bool_) or not space.contains(action):
            raise _not_in(action, space, path)
        return int(action)
    if isinstance(space, gs.Box):
        return _array_values(_box_value(action, space, path))
    if isinstance(space, gs.MultiDiscrete | gs.MultiBinary):
        return _multi_value(action, space, path)
    if isinstance(space, gs.Tuple):
        if not isinstance(action, tuple | list) or len(action) != len(space.spaces):
            raise _not_in(action, space, path, f"expected a tuple of {len(space.spaces)}")
        return [
            _by_space(a, s, f"{path}[{i}]")
            for i, (a, s) in enumerate(zip(action, space.spaces, strict=True))
        ]
    if isinstance(space, gs.Dict) and all(isinstance(k, str) for k in space.spaces):
        if not isinstance(action, Mapping) or set(action.keys()) != set(space.spaces.keys()):
            raise _not_in(action, space, path, f"expected keys {sorted(space.spaces)}")
        return {k: _by_space(action[k], s, f"{path}[{k!r}]") for k, s in space.spaces.items()}
    if isinstance(space, gs.Text):
        if not isinstance(action, str) or not space.contains(action):
            raise _not_in(action, space, path)
        return action
    return _other_value(action, space, path)


def _multi_value(action: Any, space: gs.MultiDiscrete | gs.MultiBinary, path: str) -> Any:
    """An action of a MultiDiscrete or MultiBinary space: integers, as a list."""
    try:
        ok = space.contains(action)
    except (TypeError, ValueError):
        ok = False
    if not ok or np.asarray(action).dtype.kind not in "biu":
        raise _not_in(action, space, path)
    return np.asarray(action).astype(space.dtype).tolist()


def _other_value(action: Any, space: gs.Space, path: str) -> Any:
    """An action of any other space (a custom one): its ``contains`` decides, and the
    value is stored self-describing."""
    try:
        ok = space.contains(action)
    except Exception:  # a custom space's contains() may raise on foreign input
        ok = False
    if not ok:
        raise _not_in(action, space, path)
    return _tagged(action, path)


def _box_value(action: Any, space: gs.Box, path: str) -> np.ndarray:
    arr = action if isinstance(action, np.ndarray) else None
    if arr is None:
        try:
            arr = np.asarray(action)
        except (TypeError, ValueError) as exc:
            raise _not_in(action, space, path, str(exc)) from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise _not_in(action, space, path, f"dtype {arr.dtype} is not numeric")
    if arr.shape != space.shape:
        raise _not_in(action, space, path, f"shape {arr.shape}, expected {space.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        cast = arr.astype(space.dtype)
    # Float to float rounds to the space's precision (the space defines the type);
    # anything else must convert exactly, or 0.7 would be recorded as 0.
    if not (arr.dtype.kind == "f" and space.dtype.kind == "f"):
        with np.errstate(invalid="ignore"):
            exact = np.array_equal(cast.astype(arr.dtype), arr)
        if not exact:
            raise _not_in(action, space, path, f"{arr.dtype} does not convert to {space.dtype}")
    # NaN fails these comparisons, so NaN is never in a Box.
    if not (np.all(cast >= space.low) and np.all(cast <= space.high)):
        raise _not_in(action, space, path, "outside the bounds")
    return cast


def _from_space(data: Any, spec: Mapping[str, Any]) -> Any:
    kind = spec["type"]
    if kind == "Discrete":
        return np.dtype(spec["dtype"]).type(data)
    if kind == "Box":
        return _array_from(data, np.dtype(spec["dtype"]), tuple(spec["shape"]))
    if kind == "MultiDiscrete":
        return _array_from(data, np.dtype(spec["dtype"]), np.shape(spec["nvec"]))
    if kind == "MultiBinary":
        return _array_from(data, np.dtype(spec["dtype"]), tuple(np.atleast_1d(spec["n"])))
    if kind == "Tuple":
        subs = spec["spaces"]
        if len(data) != len(subs):
            raise ValueError(f"{len(data)} items for a Tuple of {len(subs)}")
        return tuple(_from_space(d, s) for d, s in zip(data, subs, strict=True))
    if kind == "Dict":
        return {k: _from_space(data[k], s) for k, s in spec["spaces"].items()}
    if kind == "Text":
        return str(data)
    return _untagged(data)


def _tagged(value: Any, path: str) -> Any:
    """Self-describing JSON data for ``value`` (see module docstring)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_TAG: "float", "v": _float_out(value)}
    if isinstance(value, np.ndarray | np.generic):
        return _tagged_numpy(value, path)
    if isinstance(value, list):
        return [_tagged(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_tagged(v, f"{path}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, bytes | bytearray):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return _tagged_dict(value, path)
    raise InvalidInput(
        f"{_where(path)}: values of type {type(value).__qualname__} have no lossless encoding"
    )


def _tagged_numpy(value: np.ndarray | np.generic, path: str) -> dict[str, Any]:
    """A numeric numpy array or scalar, tagged with its dtype (and shape)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise InvalidInput(
                f"{_where(path)}: numpy arrays of dtype {value.dtype} are not supported"
            )
        return {
            _TAG: "ndarray",
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "v": _array_values(value.ravel()),
        }
    if value.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInput(
            f"{_where(path)}: numpy scalars of dtype {value.dtype} are not supported"
        )
    item = value.item()
    return {
        _TAG: "scalar",
        "dtype": value.dtype.str,
        "v": _float_out(item) if isinstance(item, float) else item,
    }


def _tagged_dict(value: dict, path: str) -> dict[str, Any]:
    """A dict: as a JSON object when its keys are strings (and none is the tag), else
    tagged as a list of key-value pairs."""
    if all(isinstance(k, str) for k in value) and _TAG not in value:
        return {k: _tagged(v, f"{path}[{k!r}]") for k, v in value.items()}
    return {
        _TAG: "dict",
        "v": [[_tagged(k, f"{path}.key"), _tagged(v, f"{path}[{k!r}]")] for k, v in value.items()],
    }


def _untagged(data: Any) -> Any:
    if isinstance(data, list):
        return [_untagged(v) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(_TAG)
    if tag is None:
        return {k: _untagged(v) for k, v in data.items()}
    if tag == "float":
        return float(data["v"])
    if tag == "ndarray":
        return _array_from(data["v"], np.dtype(data["dtype"]), tuple(data["shape"]))
    if tag == "scalar":
        return np.dtype(data["dtype"]).type(data["v"])
    if tag == "tuple":
        return tuple(_untagged(v) for v in data["v"])
    if tag == "bytes":
        return base64.b64decode(data["v"])
    if tag == "dict":
        return {_hashable(_untagged(k)): _untagged(v) for k, v in data["v"]}
    raise ValueError(f"unknown tag {tag!r}")


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key


# --------------------------------------------------------------------------- info


def encode_info(info: Mapping[str, Any] | None, limit: int = INFO_LIMIT_BYTES) -> str:
    """Encode a step's ``info`` dict as JSON text.

    Args:
        info: The ``info`` returned by ``reset``/``step`` (``None`` is treated as ``{}``).
        limit: Largest accepted size in bytes of UTF-8 JSON.

    Returns:
        Compact JSON text (see the module docstring for the conversions).

    Raises:
        InvalidInput: ``info`` is not a mapping, or a value cannot be encoded; the
            message names its key path, e.g. ``info['agent']['pos']``.
        InfoTooLarge: The encoded info is larger than ``limit``.
    """
    if info is None or (type(info) is dict and not info):  # the common case, cheaply
        return "{}"
    if type(info) is dict and _FAST_ENCODER is not None:
        # The common case in one step: plain JSON, no "$" (a key that may need
        # escaping), ASCII within the limit; the text the careful way below gives.
        try:
            text = "".join(_FAST_ENCODER(info, 0))
        except Exception:  # noqa: BLE001 - the careful way below says what is wrong
            text = None
        if text is not None and '"$' not in text and text.isascii() and len(text) <= limit:
            return text
    if type(info) is not dict and not isinstance(info, Mapping):
        raise InvalidInput(f"info must be a dict, not {type(info).__qualname__}")
    try:
        text = _encode_info(info, limit)
    except RecursionError:
        # Python's own limit met first (a very deep structure): the same answer.
        raise InvalidInput(_TOO_DEEP.format(what="info")) from None
    if text.isascii():  # one byte a character (the common case: no encoding pass)
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidInput(f"info holds a string that is not valid Unicode: {exc}") from exc
    if size > limit:
        raise InfoTooLarge(size, limit)
    return text


def _encode_info(info: Mapping[str, Any], limit: int) -> str:
    text = None
    if isinstance(info, dict):
        # Fast path for the common all-plain info (Atari: three ints). A "$" anywhere
        # may be a key that needs escaping, so such infos take the careful path.
        try:
            text = _dumps(info)
        except (TypeError, ValueError):
            text = None
        if text is not None and '"$' in text:
            text = None
    if text is None:
        text = _dumps(_info_value(info, "info", limit))
    return text


def decode_info(text: str | None) -> dict[str, Any]:
    """Decode an ``info`` encoded by :func:`encode_info` (``None`` gives ``{}``)."""
    if text is None:
        return {}
    try:
        return json.loads(text, object_hook=_info_hook)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"info is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidInput(_TOO_DEEP.format(what="info")) from None


def _info_key(key: Any, path: str) -> str:
    if isinstance(key, str):
        return "$" + key if key.startswith("$") else key
    if isinstance(key, bool | np.bool_) or key is None:
        return json.dumps(bool(key) if key is not None else None)
    if isinstance(key, int | np.integer):
        return str(int(key))
    if isinstance(key, float | np.floating):
        return repr(float(key))
    raise InvalidInput(f"{path}: key {key!r} of type {type(key).__qualname__} cannot be a JSON key")


def _info_value(value: Any, path: str, limit: int, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidInput(_TOO_DEEP.format(what="info") + f" (at {path[:80]}...)")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": _float_out(value)}
    if isinstance(value, np.ndarray | np.generic):
        return _info_numpy(value, path, limit, depth)
    if isinstance(value, Mapping):
        return {
            _info_key(k, path): _info_value(v, f"{path}[{k!r}]", limit, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_info_value(v, f"{path}[{i}]", limit, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_info_value(v, f"{path}{{}}", limit, depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=_dumps)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    raise InvalidInput(
        f"{path}: object of type {type(value).__qualname__} cannot be stored in info; "
        "convert it to numbers, strings, lists or dicts"
    )


def _info_numpy(value: np.ndarray | np.generic, path: str, limit: int, depth: int) -> Any:
    """A numeric numpy array (as nested lists) or scalar (as its Python value)."""
    if isinstance(value, np.generic):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise InvalidInput(f"{path}: numpy value of dtype {value.dtype} cannot be encoded")
        return _info_value(value.item(), path, limit, depth + 1)
    if value.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInput(f"{path}: numpy array of dtype {value.dtype} cannot be encoded")
    # Each element takes at least two bytes of JSON: refuse huge arrays before
    # spending milliseconds converting them on the producer thread.
    if 2 * value.size - 1 > limit:
        raise InfoTooLarge(2 * value.size - 1, limit)
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        return _info_value(value.tolist(), path, limit, depth + 1)
    return value.tolist()


def _info_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$bytes" in obj:
            return base64.b64decode(obj["$bytes"])
        if "$float" in obj:
            return float(obj["$float"])
    if any(k.startswith("$$") for k in obj):
        return {(k[1:] if k.startswith("$$") else k): v for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- reward


def check_reward(reward: Any) -> float:
    """Return ``reward`` as a float, rejecting NaN, infinities and non-numbers.

    Args:
        reward: The reward from ``env.step``: a Python or numpy real number (a 0-d
            array is accepted).

    Raises:
        InvalidInput: Not a real number, or not finite.
    """
    if type(reward) is float:  # the common case, checked first
        if math.isfinite(reward):
            return reward
        raise InvalidInput(f"reward must be finite, got {reward}")
    if isinstance(reward, np.ndarray) and reward.ndim == 0:
        reward = reward[()]
    if isinstance(reward, str | bytes | complex) or not isinstance(
        reward, int | float | np.integer | np.floating | np.bool_
    ):
        raise InvalidInput(
            f"reward must be a real number, not {type(reward).__qualname__}: {reward!r}"
        )
    value = float(reward)
    if not math.isfinite(value):
        raise InvalidInput(f"reward must be finite, got {value}")
    return value


__all__ = [
    "INFO_LIMIT_BYTES",
    "check_reward",
    "decode_action",
    "decode_info",
    "encode_action",
    "encode_info",
    "space_spec",
]
