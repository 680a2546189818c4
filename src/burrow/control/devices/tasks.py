"""Timed work for devices: none. A device changes only when its owner acts; what nodes serve
follows subscriptions and accounts, whose own tasks call ``desired_state_service``."""
