"""The usage counters grow from real node reports: the connections tests' furniture."""

from tests.control.connections.conftest import clock, customer, node, wall

__all__ = ["clock", "customer", "node", "wall"]
