"""The exact response cache: an answer stored under the hash of its canonical request, scoped
per organisation, replayed (as JSON or as a stream) instead of paying an upstream again."""
