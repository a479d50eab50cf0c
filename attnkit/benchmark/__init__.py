"""Benchmarking: harness (timing), stats (Latency), roofline (FLOPs, matmul peak), environment,
report (table/JSON/CSV/plot) and run (the orchestrator behind ``attnkit bench``).

The package is ``benchmark`` rather than ``bench`` so that importing it never shadows the public
function ``attnkit.bench()``: importing a submodule binds its name on the parent package.
"""
