"""``framestore bench``: throughput, producer cost, size and memory against baselines.

Every pipeline stores the SAME frames in the SAME run, each into a fresh temporary
directory, so ratios between rows are meaningful on the machine that produced them:

==============  ===========================================================================
``framestore``  ``FrameStore.open`` + ``recorder(env_id)`` + ``record_step`` + ``close``
``sqlite-b64``  the earlier app: base64 JSON per frame, encoded on the producer, inserted
                into a SQLite row by a writer thread fed by an unbounded ``queue.Queue``
``png``         one PNG file per frame, saved on the producer thread (Pillow defaults)
``hdf5-lzf``    h5py dataset with lzf chunks of 100 frames (only when h5py is importable)
``zstd``        plain zstd level 3 over 64-frame chunks appended to one file, no metadata,
                single-threaded on the producer: the limit the others are compared with
==============  ===========================================================================

"End-to-end" time runs from opening the output to the moment everything is durable
(``close()`` returned; baselines fsync their files). "Producer cost" is
``perf_counter_ns`` around the one call the producer makes per step. Peak memory is the
RSS high-water mark (sampled by a thread with psutil) minus the RSS just before the
pipeline started; each pipeline runs in a forked child so allocator state left by one
pipeline cannot hide the next one's growth.

``vector`` (``--envs N``): a vector environment of N copies recorded through
``record_steps``, through N single-step recorders, and not at all, interleaved round by
round; plus reading one episode out of 16 interleaved against the same episode alone.

``writers`` (``--writers``): the frame writer and the SQLite sink as threads of the
producer vs a storage process, with plain zstd alongside, interleaved round by round.

``reads`` (``--reads``): chunk length and zstd level (``--chunk-frames``, ``--zstd-level``)
measured writing (CPU, bytes) and reading (random single frames through ``read_frame``,
a sequential ``iter_frames`` pass) against plain zstd, interleaved round by round.

Other modes: ``pacing`` (a fixed-rate producer loop with and without recording: does the
writer's Python work steal time from a 60 Hz loop?), ``overload`` (a producer far faster
than the writer: memory must stay bounded under both queue policies), ``stress``
(replay at 1x, 10x and maximum rate with tiny buffers: must always finish) and
``scale_out`` (frames/s of ``framestore.ray.read_store`` with 1 and 2 read tasks against
single-process ``iter_frames``, local and S3 (moto), and the readers' peak memory) and
``torch`` (``--torch``: the ``framestore.torch`` datasets through DataLoaders against
``iter_frames``, interleaved: a pass, random items, shuffled epochs, 4-frame windows).

``exports`` (``--exports``): the parquet, LeRobot, rerun and Minari exports of one
10,000-step Assault episode, interleaved round by round: wall and CPU seconds against
parquet's, peak RSS growth against an episode a tenth as long, progress.

One module per job: ``_frames`` (frame sets), ``_baselines`` (the pipelines),
``_throughput`` (the run and ratios), ``_pacing``, ``_overload``, ``_stress``,
``_vector``, ``_scaleout``, ``_torch``, ``_writers`` (writer placements), ``_reads``
(reading), ``_exports`` (dataset exports), ``_checks`` (failed
checks), ``_table`` (table and CSV), ``_measure`` (RSS, children).
"""

from ._baselines import hdf5_available
from ._checks import failed_checks
from ._exports import EXPORT_FORMATS, EXPORTS_TABLE, ExportResult, run_exports
from ._frames import DEFAULT_FRAMES, GAMES, NOISE_SHAPE, FrameSet, capture, check_fits
from ._overload import MEMORY_SLACK, OVERLOAD_TABLE, OverloadResult, overload
from ._pacing import PACING_TABLE, PacingResult, pacing, run_pacing
from ._reads import READS_TABLE, ReadsResult, run_reads
from ._scaleout import SCALEOUT_TABLE, ScaleOutResult, scale_out
from ._stress import STRESS_TABLE, StressResult, stress
from ._table import format_table, write_csv
from ._throughput import (
    LIMIT,
    PIPELINES,
    THROUGHPUT_TABLE,
    PipelineResult,
    add_ratios,
    run_bench,
    run_pipeline,
    verify_framestore,
)
from ._torch import TORCH_MODES, TORCH_TABLE, TorchResult, run_torch
from ._vector import (
    READ_TABLE,
    VECTOR_TABLE,
    ReadResult,
    VectorResult,
    read_interleaved,
    run_vector,
)
from ._writers import WRITERS_FRAMES, WRITERS_TABLE, WriterResult, run_writers

__all__ = [
    "EXPORT_FORMATS",
    "EXPORTS_TABLE",
    "ExportResult",
    "run_exports",
    "TORCH_MODES",
    "TORCH_TABLE",
    "TorchResult",
    "run_torch",
    "DEFAULT_FRAMES",
    "check_fits",
    "GAMES",
    "LIMIT",
    "MEMORY_SLACK",
    "NOISE_SHAPE",
    "OVERLOAD_TABLE",
    "PACING_TABLE",
    "PIPELINES",
    "READS_TABLE",
    "READ_TABLE",
    "SCALEOUT_TABLE",
    "STRESS_TABLE",
    "THROUGHPUT_TABLE",
    "VECTOR_TABLE",
    "WRITERS_FRAMES",
    "WRITERS_TABLE",
    "FrameSet",
    "OverloadResult",
    "PacingResult",
    "PipelineResult",
    "ReadResult",
    "ReadsResult",
    "ScaleOutResult",
    "StressResult",
    "VectorResult",
    "WriterResult",
    "add_ratios",
    "capture",
    "failed_checks",
    "format_table",
    "hdf5_available",
    "overload",
    "pacing",
    "read_interleaved",
    "run_bench",
    "run_pacing",
    "run_pipeline",
    "run_reads",
    "run_vector",
    "scale_out",
    "run_writers",
    "stress",
    "verify_framestore",
    "write_csv",
]
