"""Corpus extraction from real builds and IR analysis with llvmlite."""
