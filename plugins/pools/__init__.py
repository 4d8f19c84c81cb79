"""Reading instruction pools: any supported file shape into normalised rows, and the shipped demo pool."""

from plugins.pools.conversation import to_records, to_sharegpt
from plugins.pools.demo_pool import build as build_demo_pool
from plugins.pools.loaders import (
    SHAPES,
    Table,
    detect_shape,
    load_rows,
    load_table,
    merge_tables,
    no_gc,
    normalise_records,
    split_preamble,
    to_alpaca,
)
from plugins.pools.readfile import DataError, read_records

__all__ = [
    "SHAPES",
    "DataError",
    "Table",
    "build_demo_pool",
    "detect_shape",
    "load_rows",
    "load_table",
    "merge_tables",
    "no_gc",
    "normalise_records",
    "read_records",
    "split_preamble",
    "to_alpaca",
    "to_records",
    "to_sharegpt",
]
