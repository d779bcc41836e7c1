"""The `/v1` proxy: a plain ASGI app on the hot path, kept free of per-request framework work."""
