"""Abuse complaints: recorded, traced as far as the policy's privacy mode allows, actioned."""
