"""`python -m boruta.transport`: the operation tables of docs/protocol.md, from the declarations."""
from boruta.transport.operations import ALL_TABLES, markdown_block

for endpoint in ALL_TABLES:
    print(markdown_block(endpoint), end="\n\n")
