"""Provider adapters: one module per upstream API, behind the small `Provider` protocol."""
