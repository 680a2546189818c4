"""The operator's policy file: typed, validated, read by every service that decides anything."""
