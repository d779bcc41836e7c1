"""The cache key: SHA-256 over the organisation, the endpoint and the canonical request."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import orjson

# Fields that do not change the answer's content: how it is delivered (stream, stream
# options) or who it is billed to and logged as. Every other field is part of the key, so a
# parameter this list does not know of can only cause a miss, never a wrong hit.
NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "metadata", "store"})


def cache_key(org_id: int, endpoint: str, payload: Mapping[str, object]) -> str:
    """`payload` as the upstream would get it (after DLP redaction); sorted-key JSON, so two
    requests differing only in key order or in a field of NOT_IN_KEY share an entry."""
    canonical = {name: value for name, value in payload.items() if name not in NOT_IN_KEY}
    digest = hashlib.sha256(f"{org_id}\0{endpoint}\0".encode())
    digest.update(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS))
    return f"{org_id}:{digest.hexdigest()}"
