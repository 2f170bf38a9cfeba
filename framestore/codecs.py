"""Lossless frame codecs: how a chunk's frames become bytes and back.

Codec code sees arrays and bytes only. Compressor objects are passed in by the caller
because zstandard's (de)compressors are not thread-safe: each thread owns its own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import zstandard

from ._format import MAX_FRAME_BYTES, ChunkHeader, Codec
from .errors import CorruptRecord, InvalidFrame, InvalidInput

#: The most a zstd frame can expand: a block holds at most 128 KiB and takes at least
#: 4 bytes (an RLE block), plus the frame header. Larger claims are corrupt or crafted.
ZSTD_MAX_RATIO = 32 * 1024
#: The most a PNG image can expand (deflate's limit is about 1032:1), plus its headers.
PNG_MAX_RATIO = 1100
PNG_MIN_BYTES = 57

# The default codec first: settings and CLI choices list them in this order.
CODEC_NAMES = {"zstd": Codec.ZSTD, "png": Codec.PNG, "raw": Codec.RAW}
ZSTD_LEVELS = range(-7, 23)


def codec_from_name(name: str) -> Codec:
    """Map a codec name to its id, with a clear error for unknown names."""
    try:
        return CODEC_NAMES[name]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown codec {name!r}; choose one of {', '.join(sorted(CODEC_NAMES))}"
        ) from None


def check_level(codec: Codec, level: int) -> int:
    if codec == Codec.ZSTD and (not isinstance(level, int) or level not in ZSTD_LEVELS):
        raise InvalidInput(f"zstd level must be an integer from -7 to 22, got {level!r}")
    return level


def validate_frame(frame: object) -> np.ndarray:
    """Check that ``frame`` can be stored losslessly and return a private C-order copy.

    Accepted: uint8 arrays shaped HxW, HxWx1, HxWx3 or HxWx4, non-empty, at most
    MAX_FRAME_BYTES. Non-contiguous arrays are accepted (copied).
    """
    check_frame(frame)
    return np.array(frame, dtype=np.uint8, order="C", copy=True)


def check_frame(frame: object) -> None:
    """Raise ``InvalidFrame`` unless ``validate_frame`` would accept ``frame`` (no copy)."""
    if not isinstance(frame, np.ndarray):
        raise InvalidFrame(f"frame must be a numpy.ndarray, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise InvalidFrame(
            f"frame dtype must be uint8, got {frame.dtype}; convert images with "
            "np.clip(x, 0, 255).astype(np.uint8) if that is what you mean"
        )
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
        raise InvalidFrame(
            f"frame shape must be HxW, HxWx1, HxWx3 or HxWx4, got {tuple(frame.shape)}"
        )
    if frame.size == 0:
        raise InvalidFrame(f"frame is empty (shape {tuple(frame.shape)})")
    if frame.nbytes > MAX_FRAME_BYTES:
        raise InvalidFrame(
            f"frame of {frame.nbytes} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
        )


def encode_chunk(
    frames: Sequence[np.ndarray],
    codec: Codec,
    compressor: zstandard.ZstdCompressor | None,
    staging: np.ndarray | None = None,
) -> tuple[tuple[int, ...], bytes]:
    """Encode same-shaped frames; returns (per-frame lengths, data) as FORMAT.md says.

    ``staging`` is an optional reusable uint8 buffer for the zstd codec (a thread's own).
    """
    nbytes = frames[0].nbytes
    if codec == Codec.ZSTD:
        assert compressor is not None
        if isinstance(frames, np.ndarray) and frames.flags.c_contiguous:
            # A chunk's own buffer (the write path's): compressed where it lies.
            return (nbytes,) * len(frames), compressor.compress(frames)
        # Gather into one contiguous buffer with numpy (which drops the GIL for large
        # copies, unlike b"".join) so the producer thread is not held up; then one zstd
        # frame over the whole chunk (zstandard drops the GIL while compressing).
        n = len(frames)
        if staging is None or staging.size < n * nbytes:
            staging = np.empty(n * nbytes, dtype=np.uint8)
        view = staging[: n * nbytes].reshape((n, *frames[0].shape))
        for i, f in enumerate(frames):
            view[i] = f
        return (nbytes,) * n, compressor.compress(view)
    if codec == Codec.RAW:
        if isinstance(frames, np.ndarray) and frames.flags.c_contiguous:
            return (nbytes,) * len(frames), frames.tobytes()
        return (nbytes,) * len(frames), b"".join(f.data for f in frames)
    if codec == Codec.PNG:
        from PIL import Image

        parts = []
        for f in frames:
            img = f[:, :, 0] if f.ndim == 3 and f.shape[2] == 1 else f
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG", compress_level=1)
            parts.append(buf.getvalue())
        return tuple(len(p) for p in parts), b"".join(parts)
    raise InvalidInput(f"unknown codec {codec!r}")


def decode_chunk(
    header: ChunkHeader,
    data: memoryview | bytes,
    decompressor: zstandard.ZstdDecompressor,
    *,
    segment: int | str = "?",
    offset: int = 0,
) -> np.ndarray:
    """Decode every frame of a chunk into one read-only array shaped (N, *frame shape)."""
    n = header.count
    raw_size = n * header.frame_bytes
    shape = (n, *header.shape)

    def bad(why: str) -> CorruptRecord:
        return CorruptRecord(segment, offset, f"bad chunk data: {why}")

    _check_declared_sizes(header, len(data), bad)
    if header.codec == Codec.ZSTD:
        try:
            params = zstandard.get_frame_parameters(data)
        except zstandard.ZstdError as e:
            raise bad(f"zstd: {e}") from None
        if params.content_size != raw_size:
            raise bad(f"zstd content size {params.content_size} != {raw_size} expected")
        try:
            raw = decompressor.decompress(data, max_output_size=raw_size)
        except zstandard.ZstdError as e:
            raise bad(f"zstd: {e}") from None
        if len(raw) != raw_size:
            raise bad(f"decompressed {len(raw)} bytes, expected {raw_size}")
        arr = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    elif header.codec == Codec.RAW:
        if len(data) != raw_size:
            raise bad(f"raw data is {len(data)} bytes, expected {raw_size}")
        arr = np.frombuffer(bytes(data), dtype=np.uint8).reshape(shape)
    elif header.codec == Codec.PNG:
        if sum(header.lengths) != len(data):
            raise bad("png lengths do not add up to the data size")
        arr = np.empty(shape, dtype=np.uint8)
        pos = 0
        for i, ln in enumerate(header.lengths):
            arr[i] = _decode_png(bytes(data[pos : pos + ln]), header, bad)
            pos += ln
        arr.flags.writeable = False
    else:
        raise bad(f"unknown codec {header.codec}")
    return arr


def _check_declared_sizes(header: ChunkHeader, data_bytes: int, bad) -> None:
    """Refuse, before allocating anything, a chunk whose frames cannot come from its data:
    the frame table must describe the data (raw and zstd: one frame's bytes per entry;
    png: lengths that add up to it), and the data must be able to expand to the frames."""
    n, fb = header.count, header.frame_bytes
    if header.codec in (Codec.ZSTD, Codec.RAW):
        if any(ln != fb for ln in header.lengths):
            raise bad(f"frame table lengths do not match {fb}-byte frames")
        if header.codec == Codec.ZSTD and n * fb > (data_bytes + 64) * ZSTD_MAX_RATIO:
            raise bad(f"{data_bytes} bytes of zstd data cannot hold {n * fb} bytes of frames")
    elif header.codec == Codec.PNG:
        if sum(header.lengths) != data_bytes:
            raise bad("png lengths do not add up to the data size")
        for ln in header.lengths:
            if ln < PNG_MIN_BYTES or fb > ln * PNG_MAX_RATIO:
                raise bad(f"a {ln}-byte png cannot hold a {fb}-byte frame")


def _decode_png(blob: bytes, header: ChunkHeader, bad) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as img:
            if img.width * img.height * header.channels > MAX_FRAME_BYTES:
                raise bad("png image larger than the frame limit")
            frame = np.asarray(img)
    # Pillow reports damage in these; DecompressionBombError (a plain Exception) comes
    # from Image.open on an IHDR claiming a gigantic image, before our own size check.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise bad(f"png: {e}") from None
    if header.ndim == 3 and header.channels == 1 and frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.shape != header.shape or frame.dtype != np.uint8:
        raise bad(f"png decoded to {frame.shape} {frame.dtype}, expected {header.shape} uint8")
    return frame
