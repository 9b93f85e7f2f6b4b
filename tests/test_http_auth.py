"""Who an HTTP request comes from (boruta.http.auth): tokens sent as Bearer or Basic, the
anonymous user, the insecure server, and a 401 that says what was wrong for every bad
header. Requests here are headers only; the end-to-end tests send real tokens over HTTP."""
from __future__ import annotations

import base64
import logging
from types import SimpleNamespace

import pytest
import zmq
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from boruta.core.errors import (AlreadyExistsError, ConfigError, ForbiddenError, NotFoundError,
                                BadArgumentError)
from boruta.core.users import Role, User, token_hash
from boruta.http.auth import HttpAuth, HttpUnauthorized
from boruta.server.admin_operations import AdminOperations
from boruta.server.endpoint import Call
from boruta.server.identities import INSECURE, Identities
from boruta.transport.errors import StorageFailedError
from tests.e2e_helpers import server_factory  # noqa: F401

ALICE_TOKEN = "q5wJ3xv0m1YV0b4k2m5dVq3R1p6N1w7uVQmJbX8fLhA"
BOB_TOKEN = "Jm2cN0t9cR3vB7xP4d1sQ8hF6kL2wY5aZ0eU3iO9tGk"


def key() -> str:
    return zmq.curve_keypair()[0].decode()


def identities(insecure: bool = False, store: object = None) -> Identities:
    cfg = SimpleNamespace(insecure=insecure, max_workers_per_dryad_key=1)
    ids = Identities(SimpleNamespace(cfg=cfg, store=store))
    ids.users.add(User("alice", (key(),), tokens=(token_hash(ALICE_TOKEN),)))
    ids.users.add(User("bob", (key(),), tokens=(token_hash(BOB_TOKEN),)))
    ids.users.add(User("viewer", (key(),), priorities=(16, 16), max_open=0))
    return ids


def request(*authorization: str) -> SimpleNamespace:
    return SimpleNamespace(headers=CIMultiDict(("Authorization", a) for a in authorization))


def basic(text: str) -> str:
    """What Go's net/http sends for a URL's user info (base64.StdEncoding, padded)."""
    return "Basic " + base64.b64encode(text.encode()).decode()


def refused(auth: HttpAuth, *authorization: str) -> str:
    with pytest.raises(HttpUnauthorized) as caught:
        auth.user_of(request(*authorization))
    exc = caught.value
    assert exc.status == 401 and exc.body() == {"message": exc.message}
    assert exc.headers == {"WWW-Authenticate": 'Basic realm="boruta"'}
    return exc.message


# --------------------------------------------------------------------------- tokens
def test_a_token_names_its_holder_as_bearer_or_as_basic_name_and_token() -> None:
    auth = HttpAuth(identities(), "")
    assert auth.user_of(request(f"Bearer {ALICE_TOKEN}")).name == "alice"
    assert auth.user_of(request(f"Bearer {BOB_TOKEN}")).name == "bob"
    assert auth.user_of(request(basic(f"alice:{ALICE_TOKEN}"))).name == "alice"
    assert auth.user_of(request(f"bearer   {ALICE_TOKEN} ")).name == "alice"   # RFC 7235
    assert auth.user_of(request(basic(f"bob:{BOB_TOKEN}").replace("Basic", "BASIC"))).name == "bob"


def test_a_real_aiohttp_request_is_read_the_same_way() -> None:
    auth = HttpAuth(identities(), "")
    req = make_mocked_request("GET", "/api/v1/workers/",
                              headers={"Authorization": basic(f"bob:{BOB_TOKEN}")})
    assert auth.user_of(req).name == "bob"
    with pytest.raises(HttpUnauthorized, match="credentials required"):
        auth.user_of(make_mocked_request("GET", "/api/v1/workers/"))


def test_a_token_under_another_name_is_refused_without_saying_whether_the_name_exists() -> None:
    auth = HttpAuth(identities(), "")
    wrong_user = refused(auth, basic(f"bob:{ALICE_TOKEN}"))
    no_user = refused(auth, basic(f"nobody:{ALICE_TOKEN}"))
    assert wrong_user == no_user == "the token does not belong to the name given"


def test_an_unknown_token_is_refused_the_same_whoever_it_claims_to_be() -> None:
    auth = HttpAuth(identities(), "viewer")                 # credentials given: no fallback
    messages = {refused(auth, f"Bearer {ALICE_TOKEN}x"),
                refused(auth, basic(f"alice:{BOB_TOKEN}x")),
                refused(auth, basic(f"nobody:{BOB_TOKEN}x")),
                refused(auth, f"Bearer {token_hash(ALICE_TOKEN)}")}   # the hash is no token
    assert messages == {"unknown token (mistyped, revoked, or never issued)"}


def test_revoking_a_token_or_removing_its_user_counts_from_the_next_request() -> None:
    ids = identities()
    auth = HttpAuth(ids, "")
    assert auth.user_of(request(f"Bearer {ALICE_TOKEN}")).role is Role.USER
    ids.users.update("alice", {"role": "admin"})
    assert auth.user_of(request(f"Bearer {ALICE_TOKEN}")).role is Role.ADMIN
    ids.users.with_token("alice", token_hash(ALICE_TOKEN), revoke=True)
    assert "unknown token" in refused(auth, f"Bearer {ALICE_TOKEN}")
    ids.users.remove("bob")
    assert "unknown token" in refused(auth, basic(f"bob:{BOB_TOKEN}"))


@pytest.mark.parametrize("headers, words", [
    (("Bearer",), "use `Basic BASE64(NAME:TOKEN)` or `Bearer TOKEN`"),
    (("Basic",), "use `Basic BASE64(NAME:TOKEN)` or `Bearer TOKEN`"),
    (("",), "use `Basic BASE64(NAME:TOKEN)` or `Bearer TOKEN`"),
    (("   ",), "use `Basic BASE64(NAME:TOKEN)` or `Bearer TOKEN`"),
    ((f"Bearer {ALICE_TOKEN} extra",), "use `Basic BASE64(NAME:TOKEN)` or `Bearer TOKEN`"),
    ((f"{ALICE_TOKEN}",), "use `Basic BASE64(NAME:TOKEN)` or `Bearer TOKEN`"),
    (("Digest username=alice",), "use Basic or Bearer, not 'Digest'"),
    (("Token " + ALICE_TOKEN,), "use Basic or Bearer, not 'Token'"),
    (("X" * 500 + " y",), "use Basic or Bearer, not '" + "X" * 20 + "'"),
    (("Basic !!!!",), "Basic credentials are not base64 of UTF-8 text"),
    (("Basic YWxpY2U6dG9rZW4",), "Basic credentials are not base64 of UTF-8 text"),  # no pad
    (("Basic " + base64.b64encode(b"alice:\xff\xfe").decode(),),
     "Basic credentials are not base64 of UTF-8 text"),
    (("Basic ŻÓŁW",), "Basic credentials are not base64 of UTF-8 text"),
    ((basic(ALICE_TOKEN),), "Basic credentials are not NAME:TOKEN"),
    ((basic(f":{ALICE_TOKEN}"),), "Basic credentials are not NAME:TOKEN"),
    ((basic("alice:"),), "Basic credentials are not NAME:TOKEN"),
    ((basic(""),), "use `Basic BASE64(NAME:TOKEN)` or `Bearer TOKEN`"),   # "Basic " alone
    ((f"Bearer {ALICE_TOKEN}", f"Bearer {ALICE_TOKEN}"), "give it once"),
])
def test_every_malformed_header_is_a_401_naming_the_problem(headers, words) -> None:
    message = refused(HttpAuth(identities(), "viewer"), *headers)
    assert message.startswith("malformed Authorization header: ") and message.endswith(words)


# --------------------------------------------------------------------------- no credentials
def test_without_credentials_a_request_is_the_anonymous_user_if_the_server_names_one() -> None:
    ids = identities()
    auth = HttpAuth(ids, "viewer")
    auth.check_config()
    assert auth.user_of(request()).name == "viewer"
    ids.users.update("viewer", {"max_open": 3})              # its limits as they are now
    assert auth.user_of(request()).max_open == 3
    ids.users.remove("viewer")                               # removing it turns them away
    assert refused(auth).startswith("credentials required")


def test_without_credentials_and_no_anonymous_user_a_request_is_refused() -> None:
    assert refused(HttpAuth(identities(), "")) == (
        "credentials required: send `Authorization: Bearer TOKEN` or Basic NAME:TOKEN "
        "(ask an admin for a token)")


def test_an_anonymous_user_that_does_not_exist_stops_the_server_at_start(caplog) -> None:
    with pytest.raises(ConfigError, match="http_anonymous: there is no user 'guest'") as caught:
        HttpAuth(identities(), "guest").check_config()
    assert caught.value.field == "http_anonymous"
    HttpAuth(identities(), "").check_config()                # off: nothing to check
    HttpAuth(identities(insecure=True), "guest").check_config()   # insecure: never used
    ids = identities()
    ids.users.update("viewer", {"role": "admin"})
    caplog.set_level(logging.WARNING, logger="boruta.server")
    HttpAuth(ids, "viewer").check_config()
    assert [r.getMessage() for r in caplog.records] == [
        "HTTP requests without credentials act as an admin"]


# --------------------------------------------------------------------------- insecure
@pytest.mark.parametrize("headers", [(), ("Bearer nonsense",), ("Digest x",),
                                     (basic(f"bob:{ALICE_TOKEN}"),)])
def test_an_insecure_server_treats_every_request_as_the_insecure_admin(headers) -> None:
    auth = HttpAuth(identities(insecure=True), "viewer")
    assert auth.user_of(request(*headers)) is INSECURE


# --------------------------------------------------------------------------- giving tokens
class Store:
    """Keeps user documents, or refuses to (a full disk)."""

    def __init__(self) -> None:
        self.users: dict[str, dict] = {}
        self.broken = False

    def save_user(self, doc: dict) -> None:
        if self.broken:
            raise StorageFailedError("disk full")
        self.users[doc["name"]] = doc


def test_the_admin_operation_stores_the_hash_first_and_undoes_a_refused_write() -> None:
    store = Store()
    ids = identities(store=store)
    ops = AdminOperations(SimpleNamespace(identities=ids))
    call = Call((b"peer",), 1, key="k", user=ids.users.get("alice"))
    new = token_hash("new token")
    doc = ops.op_user_token(call, {"name": "bob", "token_hash": new, "revoke": None})
    assert doc["tokens"] == [token_hash(BOB_TOKEN), new] and "new token" not in str(doc)
    assert store.users["bob"] == doc and ids.users.by_token(new).name == "bob"
    store.broken = True
    with pytest.raises(StorageFailedError):
        ops.op_user_token(call, {"name": "bob", "token_hash": new, "revoke": True})
    assert ids.users.by_token(new).name == "bob"             # still held, as the disk says
    with pytest.raises(StorageFailedError):
        ops.op_user_token(call, {"name": "alice", "token_hash": token_hash("x"), "revoke": False})
    assert ids.users.by_token(token_hash("x")) is None and ids.users.get("alice").tokens == (
        token_hash(ALICE_TOKEN),)
    store.broken = False
    doc = ops.op_user_token(call, {"name": "bob", "token_hash": new, "revoke": True})
    assert doc["tokens"] == [token_hash(BOB_TOKEN)] and store.users["bob"] == doc


@pytest.mark.slow
def test_tokens_are_given_by_admins_only_and_survive_a_restart(server_factory,  # noqa: F811
                                                                tmp_path) -> None:
    state = str(tmp_path / "state")
    server = server_factory(state_dir=state)
    admin, mia = server.client(), server.user("mia")
    hashed = token_hash("mia's token")
    assert admin.user_token(name="mia", token_hash=hashed)["tokens"] == [hashed]
    with pytest.raises(ForbiddenError):
        mia.user_token(name="mia", token_hash=token_hash("another"))
    with pytest.raises(AlreadyExistsError, match="already belongs to user 'mia'"):
        admin.user_token(name="admin", token_hash=hashed)
    with pytest.raises(BadArgumentError, match="not a token's SHA-256"):
        admin.user_token(name="mia", token_hash="mia's token")
    with pytest.raises(NotFoundError, match="User 'nobody' not found"):
        admin.user_token(name="nobody", token_hash=token_hash("x"))
    server.stop()
    again = server_factory(state_dir=state).client()
    assert {u["name"]: u.get("tokens") for u in again.user_list()} == {
        "admin": None, "mia": [hashed]}
    assert "tokens" not in again.user_token(name="mia", token_hash=hashed, revoke=True)
    with pytest.raises(NotFoundError, match="Token .* of user 'mia' not found"):
        again.user_token(name="mia", token_hash=hashed, revoke=True)
