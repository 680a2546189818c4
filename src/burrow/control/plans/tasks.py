"""Timed work for plans: none. Plans change only when the policy file does, and the policy is
read at start, where ``plan_service.sync_from_policy`` mirrors it (see ``startup.py``)."""
