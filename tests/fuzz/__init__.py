"""The fuzz tier: Hypothesis against the real app on both backends (docs/testing.md)."""
