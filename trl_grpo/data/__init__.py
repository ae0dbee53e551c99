"""Datasets into one schema: loading, columns, splits carved once, prompts, the built-in levels, SFT targets."""
