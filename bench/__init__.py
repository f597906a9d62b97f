"""Benchmarks of the message store: `make bench` runs bench/run.py (see its --help)."""
