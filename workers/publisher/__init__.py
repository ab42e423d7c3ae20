"""The publisher: drains the bus into Redis with priority queues, publish confirmation and a
latency circuit breaker (issue 6)."""
