"""A store id for a store tag (docs/FORMAT.md, "Store tag"): the tag is CRC-32 of the
id, and CRC-32 is affine over GF(2) for a fixed message length, so an id of 32 hex
digits whose tag is a given one is found by solving 32 linear equations. ``recover``
uses it when a store's segments carry its tag but nothing names its id."""

from __future__ import annotations

from . import store_tag

ID_DIGITS = 32  # a store id: uuid4().hex (migrations/m002)


def store_id_with_tag(tag: int) -> str:
    """An id of ``ID_DIGITS`` hex digits (each 0-7) whose ``store_tag`` is ``tag``."""
    base = bytearray(b"0" * ID_DIGITS)
    c0 = store_tag(base.decode())
    flips = [(i, 1 << b) for i in range(ID_DIGITS) for b in range(3)]
    deltas = []
    for i, bit in flips:
        m = bytearray(base)
        m[i] ^= bit
        deltas.append(store_tag(m.decode()) ^ c0)
    chosen = _solve(deltas, c0 ^ tag)
    for j, (i, bit) in enumerate(flips):
        if chosen >> j & 1:
            base[i] ^= bit
    out = base.decode()
    assert store_tag(out) == tag, (out, tag)
    return out


def _solve(vectors: list[int], want: int) -> int:
    """A set of ``vectors`` (a bit mask of their indexes) whose XOR is ``want``
    (Gaussian elimination over 32-bit vectors)."""
    basis: dict[int, tuple[int, int]] = {}  # pivot bit -> (vector, mask)
    for j, vec in enumerate(vectors):
        mask = 1 << j
        for bit in reversed(range(32)):
            if not vec >> bit & 1:
                continue
            if bit not in basis:
                basis[bit] = (vec, mask)
                break
            vec, mask = vec ^ basis[bit][0], mask ^ basis[bit][1]
    chosen = 0
    for bit in reversed(range(32)):
        if want >> bit & 1:
            vec, mask = basis[bit]  # full rank: 96 flips span every 32-bit vector
            want, chosen = want ^ vec, chosen ^ mask
    return chosen
