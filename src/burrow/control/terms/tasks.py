"""Timed work for the terms: none. A new version is published at start, when the policy is
read (``startup.prepare`` calls ``terms_service.publish``); acceptance by continued use is
recorded when an account is next seen (``terms_service.for_account``)."""
