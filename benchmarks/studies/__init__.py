"""Studies: one question each (a kernel, MD throughput, an ablation, time to accuracy ...),
reusing the harness's timing, systems and settings (``benchmarks/``). docs/benchmarks.md
lists them; their measurements are in docs/results.md.
"""
