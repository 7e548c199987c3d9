"""The mapping language: YAML mapping files compiled into functions from Segment messages to
Metronome usage events (design §2)."""

from __future__ import annotations

from segmetro.mapping.core import (
    MAX_TRANSACTION_ID,
    OUTPUT_FIELDS,
    REQUIRED_FIELDS,
    FieldSpec,
    FieldStats,
    FieldStatsRow,
    Mapping,
    MappingSet,
    MappingWarning,
)
from segmetro.mapping.loader import load_mapping, load_mapping_text
from segmetro.mapping.starter import mapping_from_segment, starter_mapping_text
from segmetro.mapping.timestamps import normalize_timestamp
from segmetro.mapping.values import MISSING

__all__ = [
    "MAX_TRANSACTION_ID",
    "MISSING",
    "OUTPUT_FIELDS",
    "REQUIRED_FIELDS",
    "FieldSpec",
    "FieldStats",
    "FieldStatsRow",
    "Mapping",
    "MappingSet",
    "MappingWarning",
    "load_mapping",
    "load_mapping_text",
    "mapping_from_segment",
    "normalize_timestamp",
    "starter_mapping_text",
]
