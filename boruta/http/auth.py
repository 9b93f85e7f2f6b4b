"""Who an HTTP request comes from: the holder of its token, the anonymous user, or nobody (401).

HTTP has no CurveZMQ handshake, so a request proves who it is with a token
an admin gave the user (`boruta admin user token NAME`), sent either as
`Authorization: Bearer TOKEN` or as Basic credentials `NAME:TOKEN`: the
form upstream's Go client sends when its base URL carries them
(`http://NAME:TOKEN@HOST:8487/`). The book keeps only each token's SHA-256,
so finding the user is a hash and one dictionary look-up, done afresh for
every request: a token revoked or a user changed counts from the next request.

A request without credentials acts as the `http_anonymous` user when the
server names one (read-only dashboards, upstream's tools that know no
tokens), else it is refused. Refusals say what was wrong (a malformed
header, an unknown token, a token another name holds) but never whether a
user exists: the token is looked up first, and the name only compared with
its holder's. A server run with `insecure = true` treats every request as
its INSECURE admin, as it does every ZeroMQ peer.
"""
from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any, Protocol

from boruta.core.errors import ConfigError, NotFoundError
from boruta.core.users import User, token_hash
from boruta.server.identities import INSECURE

if TYPE_CHECKING:
    from boruta.server.identities import Identities

log = logging.getLogger("boruta.server")

AUTHORIZATION = "Authorization"
CHALLENGE = 'Basic realm="boruta"'
MALFORMED = "malformed Authorization header: "
SHOWN_SCHEME = 20                    # characters of an unknown scheme echoed back


class HasHeaders(Protocol):
    """What HttpAuth reads of a request (aiohttp's BaseRequest, or a test's stand-in)."""

    @property
    def headers(self) -> Any: ...


class HttpUnauthorized(Exception):
    """A request without acceptable credentials: answered 401, JSON {"message"}, with
    the challenge that makes browsers and curl ask for a name and token."""

    status = 401

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": CHALLENGE}

    def body(self) -> dict[str, str]:
        return {"message": self.message}


class HttpAuth:
    """The user of each HTTP request, from the server's identities."""

    def __init__(self, identities: "Identities", anonymous: str) -> None:
        self.identities = identities
        self.anonymous = anonymous

    def check_config(self) -> None:
        """At server start, after the users are loaded: `http_anonymous` must name a user."""
        if self.identities.insecure or not self.anonymous:
            return
        try:
            user = self.identities.users.get(self.anonymous)
        except NotFoundError:
            raise ConfigError(
                f"there is no user {self.anonymous!r} to serve requests without credentials "
                f"(add one with `boruta admin user add {self.anonymous}` on a server started "
                "without http_anonymous, or leave http_anonymous empty)",
                field="http_anonymous") from None
        if user.admin:
            log.warning("HTTP requests without credentials act as an admin",
                        extra={"fields": {"user": user.name}})

    def user_of(self, request: HasHeaders) -> User:
        """The request's user; HttpUnauthorized says why there is none."""
        if self.identities.insecure:
            return INSECURE
        headers = request.headers.getall(AUTHORIZATION, ())
        if not headers:
            return self._anonymous()
        if len(headers) > 1:
            raise HttpUnauthorized(MALFORMED + "give it once")
        parts = headers[0].split()
        if len(parts) != 2:
            raise HttpUnauthorized(MALFORMED + "use `Basic BASE64(NAME:TOKEN)` or "
                                   "`Bearer TOKEN`")
        scheme, credentials = parts[0].lower(), parts[1]
        if scheme == "bearer":
            return self._holder(credentials, None)
        if scheme == "basic":
            name, token = _basic(credentials)
            return self._holder(token, name)
        raise HttpUnauthorized(MALFORMED + f"use Basic or Bearer, not "
                               f"{parts[0][:SHOWN_SCHEME]!r}")

    def _anonymous(self) -> User:
        """The http_anonymous user as the book holds it now; removing that user turns
        requests without credentials away."""
        if self.anonymous:
            try:
                return self.identities.users.get(self.anonymous)
            except NotFoundError:
                pass
        raise HttpUnauthorized("credentials required: send `Authorization: Bearer TOKEN` or "
                               "Basic NAME:TOKEN (ask an admin for a token)")

    def _holder(self, token: str, name: str | None) -> User:
        user = self.identities.users.by_token(token_hash(token))
        if user is None:
            raise HttpUnauthorized("unknown token (mistyped, revoked, or never issued)")
        if name is not None and name != user.name:
            raise HttpUnauthorized("the token does not belong to the name given")
        return user


def _basic(credentials: str) -> tuple[str, str]:
    """Basic credentials -> (name, token): base64 of `NAME:TOKEN` (RFC 7617)."""
    try:
        text = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise HttpUnauthorized(MALFORMED + "Basic credentials are not base64 of UTF-8 "
                               "text") from None
    name, colon, token = text.partition(":")
    if not colon or not name or not token:
        raise HttpUnauthorized(MALFORMED + "Basic credentials are not NAME:TOKEN")
    return name, token
