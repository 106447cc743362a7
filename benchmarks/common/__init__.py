"""Fixtures the benchmarks and the tests both use: random official checkpoints and parameter shapes, the float64
WKV-7 reference, synthetic Claude Code sessions and the red-team stream.

They live here, not under tests/, because a benchmark must not import a test module (running a benchmark would
then depend on the test suite's layout); the tests import them from here. Not product code: not installed.
"""
