"""The desired state: which peers every node must serve, its revisions and its deltas."""
