"""The node API: what node agents call with their node token (state, long poll, reports)."""
