"""Timed work for the abuse desk: none. The history a trace reads is purged by the devices
domain's own task (``devices.tasks.purge_address_history``)."""
