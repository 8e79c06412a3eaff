"""The fault catalogue of issue 5: one test per fault (ids from research/reliability.md §5)."""
