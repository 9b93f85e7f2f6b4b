"""The `boruta` command: one module per noun, parsing and printing beside them."""
from boruta.cli.app import cli, main, run

__all__ = ["cli", "main", "run"]
