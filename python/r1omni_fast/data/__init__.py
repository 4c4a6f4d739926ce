"""Data: R1-Omni JSON/JSONL reading and validation, batching with background prefetch, and the
synthetic dataset (``r1omni_fast.data.synthetic``)."""

from r1omni_fast.data.collate import Batch, ClipCollator, ClipPreview, epoch_batches, prefetch
from r1omni_fast.data.reader import (
    DataError,
    DataFile,
    RecordProblem,
    Sample,
    read_data,
    solution_for,
)

__all__ = [
    "ClipPreview",
    "Batch",
    "ClipCollator",
    "DataError",
    "DataFile",
    "RecordProblem",
    "Sample",
    "epoch_batches",
    "prefetch",
    "read_data",
    "solution_for",
]
