"""Persistence: the schema, the async engine and migrations."""
