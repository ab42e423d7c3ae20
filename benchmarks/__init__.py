"""Benchmarks for microstream (run as scripts; see each module's docstring)."""
