"""Benchmarks: macelab side by side with mace-torch (and cuEquivariance) on one device.

``python benchmarks/run.py --suite all --out DIR`` is the entry point; see
``docs/benchmarks.md`` for what it measures and how to run it on the GPU machine.
"""
