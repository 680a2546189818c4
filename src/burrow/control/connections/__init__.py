"""Connections: live leases, connection limits across the fleet, metered-mode records."""
