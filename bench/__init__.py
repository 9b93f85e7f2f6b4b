"""Boruta benchmarks (docs/benchmarks.md): `python -m bench`, `pytest bench/ --benchmark-only`.

farm.py builds the standard farm; scenarios.py runs S1-S3, memory.py S4; docs/benchmarks.md explains.
"""
