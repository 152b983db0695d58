"""Benchmarks: macelab side by side with mace-torch (and cuEquivariance) on one device.

The harness is this folder: ``python benchmarks/run.py --suite all --out DIR`` is its entry
point. ``benchmarks/studies/`` holds the studies that reuse it (one question each),
``benchmarks/gpu/`` the scripts that run both on the GPU machine and ``benchmarks/results/``
the raw results. ``docs/benchmarks.md`` says what it measures and how to run it;
``docs/results.md`` logs every measurement.
"""
