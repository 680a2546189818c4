"""Timed work of the support desk: none yet (deadlines are read when the queue is shown and
counted in /metrics)."""
