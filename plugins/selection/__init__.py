"""Choosing rows from a pool: scoring strategies (length, rating, IFD, diversity, quota...), the knee of a
score curve, the curriculum split, the leakage check against evaluation prompts, the general-data mix."""

from plugins.selection.curriculum import STAGES, parse_thresholds
from plugins.selection.diversity import minilm_available
from plugins.selection.ifd import batches, compute_ifd
from plugins.selection.knee import find_knee
from plugins.selection.mix import general_count, mix_general
from plugins.selection.quota import parse_quota
from plugins.selection.strategies import (
    STUDY_STRATEGIES,
    UNSCORED,
    Context,
    complexity,
    parse_strategy,
    percentile,
    score,
    select_quota,
    top_n,
    total_words,
)
from plugins.selection.words import word_counts

__all__ = [
    "STAGES",
    "STUDY_STRATEGIES",
    "UNSCORED",
    "Context",
    "batches",
    "complexity",
    "compute_ifd",
    "find_knee",
    "general_count",
    "minilm_available",
    "mix_general",
    "parse_quota",
    "parse_strategy",
    "parse_thresholds",
    "percentile",
    "score",
    "select_quota",
    "top_n",
    "total_words",
    "word_counts",
]
