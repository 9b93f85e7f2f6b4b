"""Boruta benchmarks (docs/benchmarks.md): `python -m bench`, `pytest bench/ --benchmark-only`.

farm.py builds the standard farm; scenarios.py runs S1-S4; docs/benchmarks.md explains.
"""
