"""The admin overview's figures: read-only aggregates over all customers, never a series
about one person."""
