"""Data: R1-Omni JSON/JSONL reading and validation, the clip collator, the synthetic dataset."""

from r1omni_fast.data.reader import (
    FORMAT_SUFFIX,
    INSTRUCTION,
    DataError,
    DataFile,
    RecordProblem,
    Sample,
    read_data,
    solution_for,
)

__all__ = [
    "FORMAT_SUFFIX",
    "INSTRUCTION",
    "DataError",
    "DataFile",
    "RecordProblem",
    "Sample",
    "read_data",
    "solution_for",
]
