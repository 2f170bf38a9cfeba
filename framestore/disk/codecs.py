"""Lossless frame codecs: how a chunk's frames become bytes and back.

Codec code sees arrays and bytes only. Compressor objects are passed in by the caller
because zstandard's (de)compressors are not thread-safe: each thread owns its own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import zstandard

from .._format import MAX_FRAME_BYTES, ChunkHeader, Codec
from .._format.parts import ZstdParts, has_seek_table, pack_seek_table, unpack_parts
from ..errors import CorruptRecord, InvalidFrame, InvalidInput

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


_UINT8 = np.dtype(np.uint8)


def check_frame(frame: object) -> None:
    """Raise ``InvalidFrame`` unless ``validate_frame`` would accept ``frame`` (no copy)."""
    if not isinstance(frame, np.ndarray):
        raise InvalidFrame(f"frame must be a numpy.ndarray, got {type(frame).__name__}")
    dtype = frame.dtype
    if dtype is not _UINT8 and dtype != np.uint8:  # identity first: the common case, cheaply
        raise InvalidFrame(
            f"frame dtype must be uint8, got {frame.dtype}; convert images with "
            "np.clip(x, 0, 255).astype(np.uint8) if that is what you mean"
        )
    shape = frame.shape
    ndim = len(shape)
    if ndim not in (2, 3) or (ndim == 3 and shape[2] not in (1, 3, 4)):
        raise InvalidFrame(f"frame shape must be HxW, HxWx1, HxWx3 or HxWx4, got {tuple(shape)}")
    if frame.size == 0:
        raise InvalidFrame(f"frame is empty (shape {tuple(frame.shape)})")
    if frame.nbytes > MAX_FRAME_BYTES:
        raise InvalidFrame(
            f"frame of {frame.nbytes} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
        )


def encode_chunk(
    frames: np.ndarray | Sequence[np.ndarray],
    codec: Codec,
    compressor: zstandard.ZstdCompressor | None,
    part_frames: int = 0,
) -> tuple[tuple[int, ...], bytes]:
    """Encode same-shaped frames; returns (per-frame lengths, data) as FORMAT.md says.

    ``frames``: one C-contiguous array (N, *shape) (a chunk's buffer), or N separate
    C-contiguous frames (a chunk of frames handed over by the caller: fed to zstd one by
    one, never gathered into one buffer first).
    ``part_frames`` (zstd): a chunk of more frames is written as independently decodable
    parts of that many frames plus a seek table, so a random read decodes one part
    (docs/FORMAT.md, "zstd parts"); 0 writes one zstd frame for the whole chunk.
    """
    nbytes = frames[0].nbytes
    if codec == Codec.ZSTD:
        assert compressor is not None
        return (nbytes,) * len(frames), encode_zstd(frames, compressor, part_frames)
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


def encode_zstd(
    frames: np.ndarray | Sequence[np.ndarray],
    compressor: zstandard.ZstdCompressor,
    part_frames: int = 0,
) -> bytes:
    """zstd chunk data of ``frames`` (an (N, *shape) array or N frames, C-contiguous):
    one zstd frame, or with ``0 < part_frames < N`` parts of ``part_frames`` frames and a
    seek table. ``compressor`` must write the content size."""
    n = len(frames)
    step = part_frames if 0 < part_frames < n else n
    parts = [_zstd_of(frames[i : i + step], compressor) for i in range(0, n, step)]
    if step == n:
        return parts[0]
    sizes = [
        (len(p), sum(f.nbytes for f in frames[i : i + step]))
        for p, i in zip(parts, range(0, n, step), strict=True)
    ]
    return b"".join((*parts, pack_seek_table(sizes)))


def _zstd_of(frames: np.ndarray | Sequence[np.ndarray], compressor) -> bytes:
    """One zstd frame (its content size in its header) holding ``frames``: an array is
    compressed where it lies; separate frames are streamed in one by one with the total
    size pledged up front, which gives the same kind of zstd frame without a gather copy
    (zstd releases the GIL in both)."""
    if isinstance(frames, np.ndarray):
        return compressor.compress(np.ascontiguousarray(frames))
    stream = compressor.compressobj(size=sum(f.nbytes for f in frames))
    out = [stream.compress(np.ascontiguousarray(f)) for f in frames]
    out.append(stream.flush())
    return b"".join(out)


def decode_chunk(
    header: ChunkHeader,
    data: memoryview | bytes,
    decompressor: zstandard.ZstdDecompressor,
    *,
    out: np.ndarray | None = None,
    parts: ZstdParts | None = None,
    segment: int | str = "?",
    offset: int = 0,
) -> np.ndarray:
    """Decode every frame of a chunk into one read-only array shaped (N, *frame shape).

    ``out`` (zstd): a flat uint8 array of at least N frames' bytes to decode into (a
    reused buffer, whose pages are already mapped); the result is then a view of it.
    ``parts``: the chunk's zstd parts when the caller has read its seek table already
    (else it is read here). A chunk in parts is decoded in ONE pass: its parts are
    consecutive zstd frames of one stream, read by one decoder call, not one per part."""
    n = header.count
    raw_size = n * header.frame_bytes
    shape = (n, *header.shape)
    bad = _bad(segment, offset)
    _check_declared_sizes(header, len(data), bad)
    if header.codec == Codec.ZSTD:
        if parts is None:
            parts = zstd_parts(header, data, segment=segment, offset=offset)
        if parts is None and out is None:
            arr = np.frombuffer(_zstd_frame(data, decompressor, raw_size, bad), np.uint8)
        else:
            arr = np.empty(raw_size, dtype=np.uint8) if out is None else out[:raw_size]
            if parts is None:
                _zstd_into(memoryview(data), decompressor, arr, raw_size, bad)
            else:
                _zstd_parts_into(data, parts, decompressor, arr, header.frame_bytes, bad)
            arr = arr.view()
            arr.flags.writeable = False
        arr = arr.reshape(shape)
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


def zstd_parts(
    header: ChunkHeader, data: memoryview | bytes, *, segment: int | str = "?", offset: int = 0
) -> ZstdParts | None:
    """The parts of a zstd chunk's data (None: one zstd frame holds every frame).

    Raises ``CorruptRecord`` for a seek table that does not describe the data."""
    if not has_seek_table(data):
        return None
    return unpack_parts(data, header.count, header.frame_bytes, _bad(segment, offset))


def decode_part(
    header: ChunkHeader,
    data: memoryview | bytes,
    decompressor: zstandard.ZstdDecompressor,
    parts: ZstdParts,
    part: int,
    stop: int | None = None,
    *,
    out: np.ndarray | None = None,
    segment: int | str = "?",
    offset: int = 0,
) -> np.ndarray:
    """Frames ``parts.first[part] <= slot < stop`` of a zstd chunk with parts (``stop``
    None: to the end of the part), decoding only that part and, with ``stop``, only up
    to that frame (zstd decodes a frame front to back: the frames before the last wanted
    one must be decoded anyway, the ones after it need not).

    Returns an array shaped (frames, *frame shape): a new read-only one, or with ``out``
    (a flat uint8 array at least that large, e.g. a thread's reused scratch buffer, whose
    pages are already mapped) a view of ``out``."""
    bad = _bad(segment, offset)
    _check_declared_sizes(header, len(data), bad)
    first, end = parts.first[part], parts.first[part + 1]
    stop = end if stop is None else stop
    if not first < stop <= end:
        raise ValueError(f"frames {first}..{stop} are not in part {part} ({first}..{end})")
    fb = header.frame_bytes
    want = (stop - first) * fb
    target = np.empty(want, dtype=np.uint8) if out is None else out[:want]
    _zstd_into(_part_data(data, parts, part), decompressor, target, (end - first) * fb, bad)
    if out is None:
        target.flags.writeable = False
    return target.reshape((stop - first, *header.shape))


class PartStream:
    """One zstd part of a chunk decoded front to back in pieces, each into memory the
    caller gives (``read_into``): runs of a pass cut into batches decode each part once
    and copy nothing. The part's content size is checked against the seek table here,
    its end when the last piece is read (as ``decode_part`` checks them)."""

    def __init__(
        self,
        header: ChunkHeader,
        data: memoryview | bytes,
        decompressor: zstandard.ZstdDecompressor,
        parts: ZstdParts,
        part: int,
        *,
        segment: int | str = "?",
        offset: int = 0,
    ):
        self._bad = _bad(segment, offset)
        _check_declared_sizes(header, len(data), self._bad)
        src = _part_data(data, parts, part)
        self.size = (parts.first[part + 1] - parts.first[part]) * header.frame_bytes
        content = _content_size(src, self._bad)
        if content != self.size:
            raise self._bad(f"zstd content size {content} != {self.size} expected")
        self._reader = decompressor.stream_reader(src, read_size=len(src))
        self.done = 0

    def read_into(self, out: np.ndarray, *, end: bool) -> None:
        """Decode the next ``len(out)`` bytes into ``out`` (flat uint8); ``end``: these
        are the part's last bytes, and the zstd frame must end there."""
        view = memoryview(out)
        got = 0
        try:
            while got < len(view):
                n = self._reader.readinto(view[got:])
                if not n:
                    break
                got += n
            extra = self._reader.read(1) if end and self.done + got == self.size else b""
        except zstandard.ZstdError as e:
            raise self._bad(f"zstd: {e}") from None
        self.done += got
        if got != len(view) or (end and self.done != self.size):
            raise self._bad(f"decompressed {self.done} bytes, expected {self.size}")
        if extra:
            raise self._bad(f"zstd frame holds more than its content size {self.size}")


def decode_parts(
    header: ChunkHeader,
    data: memoryview | bytes,
    decompressor: zstandard.ZstdDecompressor,
    parts: ZstdParts,
    *,
    segment: int | str = "?",
    offset: int = 0,
) -> list[np.ndarray]:
    """Every part of a zstd chunk with parts, each decoded into its own read-only array
    shaped (frames, *frame shape) (one allocation per part, no copy into one array)."""
    bad = _bad(segment, offset)
    _check_declared_sizes(header, len(data), bad)
    fb = header.frame_bytes
    out = []
    for p in range(parts.count):
        n = parts.first[p + 1] - parts.first[p]
        raw = _zstd_frame(_part_data(data, parts, p), decompressor, n * fb, bad)
        out.append(np.frombuffer(raw, dtype=np.uint8).reshape((n, *header.shape)))
    return out


def _bad(segment: int | str, offset: int):
    def bad(why: str) -> CorruptRecord:
        return CorruptRecord(segment, offset, f"bad chunk data: {why}")

    return bad


def _part_data(data: memoryview | bytes, parts: ZstdParts, part: int) -> memoryview:
    return memoryview(data)[parts.start[part] : parts.start[part + 1]]


def _content_size(src: memoryview | bytes, bad) -> int:
    try:
        return zstandard.get_frame_parameters(src).content_size
    except zstandard.ZstdError as e:
        raise bad(f"zstd: {e}") from None


def _zstd_frame(
    src: memoryview | bytes, decompressor: zstandard.ZstdDecompressor, size: int, bad
) -> bytes:
    """The content of the one zstd frame ``src``, which must be exactly ``size`` bytes."""
    content = _content_size(src, bad)
    if content != size:
        raise bad(f"zstd content size {content} != {size} expected")
    try:
        raw = decompressor.decompress(src, max_output_size=size)
    except zstandard.ZstdError as e:
        raise bad(f"zstd: {e}") from None
    if len(raw) != size:
        raise bad(f"decompressed {len(raw)} bytes, expected {size}")
    return raw


def _zstd_into(
    src: memoryview, decompressor: zstandard.ZstdDecompressor, out: np.ndarray, size: int, bad
) -> None:
    """Decode the first ``len(out)`` bytes of the zstd frame ``src``, whose content must
    be ``size`` bytes, into ``out`` (a flat uint8 array) without an intermediate copy.
    Only what is decoded is checked: a prefix read cannot see damage past it (the
    record's CRC covers every byte; a whole read checks the frame ends at ``size``)."""
    content = _content_size(src, bad)
    if content != size:
        raise bad(f"zstd content size {content} != {size} expected")
    reader = decompressor.stream_reader(src, read_size=len(src))
    # Decoded to its end: the frame must end there too (no content past its size).
    if _fill(reader, out, len(out) == size, bad):
        raise bad(f"zstd frame holds more than its content size {size}")


def _fill(reader, out: np.ndarray, whole: bool, bad) -> bool:
    """Fill ``out`` (a flat uint8 array) from the zstd ``reader``; decoding stops short
    of ``len(out)`` bytes is an error. Returns whether content follows them, asked only
    when the read is ``whole`` (a prefix read leaves the rest undecoded)."""
    view = memoryview(out)
    got = 0
    try:
        while got < len(view):
            n = reader.readinto(view[got:])
            if not n:
                break
            got += n
        extra = bool(reader.read(1)) if whole and got == len(view) else False
    except zstandard.ZstdError as e:
        raise bad(f"zstd: {e}") from None
    if got != len(view):
        raise bad(f"decompressed {got} bytes, expected {len(view)}")
    return extra


def _zstd_parts_into(
    data: memoryview | bytes,
    parts: ZstdParts,
    decompressor: zstandard.ZstdDecompressor,
    out: np.ndarray,
    frame_bytes: int,
    bad,
) -> None:
    """Decode every part of zstd chunk data into ``out`` (a flat uint8 array of exactly
    the chunk's frames' bytes) with one streaming decoder reading across the parts' zstd
    frames (the seek table after them is left out). Each part's declared content size
    is checked against the seek table first, as a part read alone checks it; the decoder
    checks each zstd frame against its content size, and the stream must end exactly
    at ``len(out)`` bytes."""
    for p in range(parts.count):
        size = (parts.first[p + 1] - parts.first[p]) * frame_bytes
        content = _content_size(_part_data(data, parts, p), bad)
        if content != size:
            raise bad(f"zstd content size {content} != {size} expected")
    src = memoryview(data)[: parts.start[-1]]
    reader = decompressor.stream_reader(src, read_size=len(src), read_across_frames=True)
    if _fill(reader, out, True, bad):
        raise bad(f"zstd parts hold more than their content sizes ({len(out)} bytes)")


def _check_declared_sizes(header: ChunkHeader, data_bytes: int, bad) -> None:
    """Refuse, before allocating anything, a chunk whose frames cannot come from its data:
    the frame table must describe the data (raw and zstd: one frame's bytes per entry;
    png: lengths that add up to it), and the data must be able to expand to the frames."""
    n, fb = header.count, header.frame_bytes
    if header.codec in (Codec.ZSTD, Codec.RAW):
        if header.lengths.count(fb) != n:
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
