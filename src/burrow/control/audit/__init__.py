"""The admin audit trail: a leaf every domain records its operator actions in."""
