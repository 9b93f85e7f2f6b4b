"""The network layer: wire protocol, server, clients, tunnels, dryad link, simulated dryads.

See docs/protocol.md for the messages. Public names: `Client` (blocking),
`AsyncClient` (asyncio), `ServerUnreachableError`, `WaitTimeoutError`.
"""
from boruta.transport.client import (AsyncClient, Client, ServerUnreachableError,
                                     WaitTimeoutError)

__all__ = ["AsyncClient", "Client", "ServerUnreachableError", "WaitTimeoutError"]
