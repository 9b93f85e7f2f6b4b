"""The wire and its clients: codec, operation table, errors, addresses, Client, AsyncClient.

See docs/protocol.md for the messages.
"""
from boruta.transport.async_client import AsyncClient
from boruta.transport.client import Client
from boruta.transport.errors import ServerUnreachableError, WaitTimeoutError

__all__ = ["AsyncClient", "Client", "ServerUnreachableError", "WaitTimeoutError"]
