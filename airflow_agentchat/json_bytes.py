"""JSON as UTF-8 bytes for the lines and entries the provider writes, by the fastest encoder that can.

pydantic-core's encoder writes compact UTF-8 JSON in one step in Rust, which matters where a batch writes one
line (and one cache entry) per item. It refuses a lone surrogate (from an item's context or an error message;
it cannot be UTF-8), so such a record is written by ``json`` with the surrogate as its JSON escape
(``\\ud800``), which reads back as the same string.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_json

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_bytes(record: Any) -> bytes:
    """``record`` as compact JSON bytes; NaN and infinity as the constants ``json`` writes."""
    try:
        return to_json(record, inf_nan_mode="constants")
    except ValueError:
        return _encoder.encode(record).encode("utf-8", "backslashreplace")
