"""Throughput benchmarks behind ``scripts/bench.py`` (images/s, seconds); never asserted in tests."""
