"""Reproducible, offline benchmarks of tvdb-assets: `make bench` (`python -m bench`).

Each measurement prints one JSON object per line on stdout; progress goes to stderr and a
markdown table to `bench/results/latest.md`.
"""
