"""Evaluation suites and their data."""
