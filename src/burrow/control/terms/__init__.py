"""Terms as code: rendered from the policy, versioned by content hash, accepted by accounts."""
