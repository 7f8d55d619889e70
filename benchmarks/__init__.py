"""Micro-benchmarks of the MSA library (scripts, not tests)."""
