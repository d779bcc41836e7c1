"""What an entry holds: the complete answer body and its usage, in one bytes value."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

from agentwatch.providers.base import Usage


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: bytes  # the complete (non-streamed) JSON answer, as the client saw it
    usage: Usage | None

    def encode(self) -> bytes:
        header = orjson.dumps({"v": 1, "usage": asdict(self.usage) if self.usage else None})
        return header + b"\n" + self.body

    @classmethod
    def decode(cls, value: bytes) -> CachedAnswer | None:
        """None for a value this version cannot read (it is then a miss)."""
        header, sep, body = value.partition(b"\n")
        if not sep:
            return None
        try:
            meta = orjson.loads(header)
            usage = meta.get("usage")
            return cls(body, Usage(**usage) if isinstance(usage, dict) else None)
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            return None
