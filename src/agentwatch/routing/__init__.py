"""Routing and resilience: strategies, retries with backoff, failover and circuit breakers."""
