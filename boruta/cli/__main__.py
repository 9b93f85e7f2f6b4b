"""`python -m boruta.cli ...` is the `boruta` command."""
from boruta.cli.app import main

main()
