"""Pallas kernels (a leaf package: imports only jax)."""
