"""The first order's usage counters: bytes and sessions a refund rule reads, and nothing else.

The connections service feeds them (``usage_service.count``) when an admitted connection's
record is written; the refund decision reads them; ``expire_usage_counters`` deletes them once
no refund rule needs them.
"""
