"""`boruta admin user ...` and `boruta admin dryad ...`: who may use the farm.

Secrets never cross the wire: the command makes a new keypair, writes its
key file (0600) here, and sends the server only the public key. The files
are written *before* the server is asked, and removed if it refuses, so
that no user or dryad exists on the server without the key file that
makes it usable. An HTTP token likewise: the command makes it, sends its
SHA-256 and prints the token once.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from boruta.cli import output as out
from boruta.cli.errors import EXIT_UNREACHABLE, CliError, is_unreachable
from boruta.cli.options import CONTEXT, UUID, ParsedType, global_options, show
from boruta.cli.parse import parse_integer
from boruta.cli.session import client_config, client_session
from boruta.core.errors import BorutaError, ConfigError
from boruta.core.names import USER_NAME_RULE, is_user_name
from boruta.core.types import HI_PRIO, LO_PRIO
from boruta.core.users import UNLIMITED_OPEN, is_token_hash, token_hash
from boruta.transport.addresses import (CLIENT_ENDPOINT, HTTP_PORT, WILDCARD_HOSTS, AddressError,
                                        join_host_port, split_host_port)
from boruta.transport.credentials import (check_public_key, new_keypair, write_client_config,
                                          write_key_file)


# --------------------------------------------------------------------------- parameters

def _user_name(text: str) -> str:
    if not is_user_name(text):
        raise ValueError(f"{text!r} is not a user name ({USER_NAME_RULE})")
    return text


def _priorities(text: str) -> tuple[int, int]:
    first, dash, second = text.strip().partition("-")
    if not dash:
        raise ValueError(f"{text!r} is not a range HIGH-LOW, e.g. {HI_PRIO}-{LO_PRIO} or 4-16")
    what = f"priorities run from {HI_PRIO} (most important) to {LO_PRIO} (least)"
    high, low = (parse_integer(n, HI_PRIO, LO_PRIO, what) for n in (first, second))
    if high > low:
        raise ValueError(f"{text!r}: the highest priority (the smaller number) comes first, "
                         f"as in {low}-{high}")
    return high, low


def _public_key(text: str) -> str:
    try:
        return check_public_key(text, "public key")
    except ConfigError as exc:
        raise ValueError(exc.problem) from None


USER_NAME = ParsedType("name", _user_name)
PRIORITY_RANGE = ParsedType("range", _priorities)
PUBLIC_KEY = ParsedType("key", _public_key)
MAX_OPEN = ParsedType("integer", lambda text: parse_integer(
    text, 0, UNLIMITED_OPEN, f"max open requests run from 0 to {UNLIMITED_OPEN}"))


def _limits(f: Callable) -> Callable:
    """--group, --role, --priorities and --max-open of `user add` and `user set`."""
    f = click.option("--max-open", type=MAX_OPEN, metavar="N",
                     help="How many open (waiting or running) requests they may hold "
                          "(default 1000).")(f)
    f = click.option("--priorities", type=PRIORITY_RANGE, metavar="HIGH-LOW",
                     help=f"The priorities they may ask for, e.g. 4-16 (default "
                          f"{HI_PRIO}-{LO_PRIO}: all).")(f)
    f = click.option("--role", type=click.Choice(["user", "admin"]),
                     help="user (default) or admin (manages the farm).")(f)
    f = click.option("--group", "groups", multiple=True, metavar="G",
                     help="A group their requests carry (it restricts the workers they may "
                          "get); repeat for more.")(f)
    return f


# --------------------------------------------------------------------------- key files

def _free(*paths: Path) -> None:
    """Refuse before writing anything when a file is in the way (a key file is an identity)."""
    for path in paths:
        if path.exists() or path.is_symlink():
            raise CliError(f"{path} already exists; not overwriting it (give --out another "
                           "file, or move it away)")


def _written_before_the_call(paths: Sequence[Path], call: Callable[[], Any]) -> Any:
    """`call()`, with `paths` already written. Refused, they go (they would name an
    identity the server does not know); unanswered, they stay, since the server may
    have carried the call out, and the error says so."""
    try:
        return call()
    except BorutaError as exc:
        if not is_unreachable(exc):
            _remove(paths)
            raise
        kept = " and ".join(str(p) for p in paths)
        raise CliError(f"{exc.message}; the server may have carried it out, so {kept} "
                       "stay: check with `boruta admin user list` or `boruta admin dryad "
                       "list`, and remove them if it did not", code=exc.code,
                       exit_code=EXIT_UNREACHABLE) from None
    except CliError:                 # the handshake or the client config: nothing was sent
        _remove(paths)
        raise


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _write_key(path: Path, comment: str) -> tuple[str, Path]:
    """A new keypair in a key file (0600); returns its public key and the file."""
    pair = new_keypair()
    try:
        return pair.public, write_key_file(path, pair, comment=comment)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def safe_file_name(uuid: str) -> str:
    """A file name for a worker's UUID: UUIDs may hold '/', spaces or a leading '.'; a
    name that had to change gets a short hash of the UUID, so two UUIDs never share it."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", uuid).lstrip(".")[:80] or "dryad"
    if safe != uuid:
        safe += "-" + hashlib.sha256(uuid.encode("utf-8")).hexdigest()[:8]
    return safe


def _server_key() -> str | None:
    """The server's public key as this admin's client config holds it (None: plain text)."""
    credentials = client_config().credentials
    return credentials.server_key if credentials is not None else None


# --------------------------------------------------------------------------- users

@click.group("user", context_settings=CONTEXT)
@global_options()
def user() -> None:
    """Add, change, remove and list the farm's users (admins only).

    A user is a name, one or more public keys their clients connect with,
    the groups their requests carry, a role (user or admin), the priorities
    they may ask for and how many open requests they may hold.

    \b
    Examples:
      boruta admin user add alice --group lab --priorities 4-16
      boruta admin user set alice --max-open 20
      boruta admin user list
      boruta admin user token alice
      boruta admin user remove alice
    """


def _user_args(groups: Sequence[str], role: str | None, priorities: tuple[int, int] | None,
               max_open: int | None) -> dict[str, Any]:
    return {"groups": list(groups) or None, "role": role,
            "priorities": list(priorities) if priorities is not None else None,
            "max_open": max_open}


def _describe(doc: dict[str, Any]) -> str:
    high, low = doc.get("priorities") or (HI_PRIO, LO_PRIO)
    return (f"role {doc.get('role')}, groups {out.fmt_groups(doc.get('groups') or [])}, "
            f"priorities {high}-{low}, max open {doc.get('max_open')}")


@user.command("add")
@click.argument("name", type=USER_NAME)
@_limits
@click.option("--public-key", type=PUBLIC_KEY, metavar="Z85",
              help="The user's own public key (they keep the secret); no key file is made.")
@click.option("--out", "out_file", metavar="FILE",
              help="Where to write the new key file (default ./NAME.key, mode 0600); "
                   "NAME.client.toml goes beside it.")
@global_options()
def user_add(name: str, groups: tuple[str, ...], role: str | None,
             priorities: tuple[int, int] | None, max_open: int | None,
             public_key: str | None, out_file: str | None) -> None:
    """Add a user; make their key file and client config unless --public-key.

    The user copies the two files into ~/.config/boruta/ (the command says
    how) and runs `boruta` as themselves.

    \b
    Examples:
      boruta admin user add alice --group lab
      boruta admin user add ci --priorities 8-16 --max-open 50 --out /secure/ci.key
      boruta admin user add bob --public-key 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7'
    """
    args = _user_args(groups, role, priorities, max_open)
    if public_key is not None:
        if out_file is not None:
            raise click.UsageError("--out makes a new key file; --public-key uses the user's "
                                   "own key: give one of them")
        with client_session() as client:
            doc = client.user_add(name=name, keys=[public_key], **args)
        show({"user": doc}, lambda _: click.echo(f"User {name} added ({_describe(doc)})."))
        return
    key_path = Path(out_file) if out_file else Path(f"{name}.key")
    config_path = key_path.with_name(f"{name}.client.toml")
    _free(key_path, config_path)
    config = client_config()                 # where this admin's server is, and its key
    server_key = config.credentials.server_key if config.credentials is not None else None
    public, key_path = _write_key(key_path, f"boruta user {name}")
    try:
        write_client_config(config_path, server=config.server or CLIENT_ENDPOINT,
                            events=config.events, server_key=server_key,
                            key_file=key_path.name if server_key is not None else None)
    except ConfigError as exc:
        _remove([key_path])
        raise CliError(str(exc)) from None

    def call() -> Any:
        with client_session() as client:
            return client.user_add(name=name, keys=[public], **args)
    doc = _written_before_the_call([key_path, config_path], call)
    show({"user": doc, "key_file": str(key_path.absolute()),
          "client_config": str(config_path.absolute())},
         lambda _: _print_added(name, doc, key_path, config_path, server_key,
                                config.server or CLIENT_ENDPOINT))


def _print_added(name: str, doc: dict[str, Any], key_path: Path, config_path: Path,
                 server_key: str | None, server: str) -> None:
    click.echo(f"User {name} added ({_describe(doc)}).")
    click.echo(f"Wrote {key_path} (their secret key, mode 0600) and {config_path} "
               "(where the server is).")
    click.echo(f"Give both files to {name} privately; they install them with:")
    click.echo(f"  install -D -m 600 {key_path.name} ~/.config/boruta/{key_path.name}")
    click.echo(f"  install -D -m 600 {config_path.name} ~/.config/boruta/client.toml")
    if any(host in server for host in ("//127.", "//localhost", "//[::1]")):
        click.echo(f"(It names {server}, as your own config does: if {name} works on "
                   "another machine, put the server's address in it.)")
    if server_key is None:
        click.echo("(Your client config names no server key: the server runs without "
                   "encryption, and the key file is not used yet.)")


@user.command("set")
@click.argument("name", type=USER_NAME)
@_limits
@click.option("--no-groups", is_flag=True, help="Remove every group.")
@click.option("--add-key", "add_keys", type=PUBLIC_KEY, multiple=True, metavar="Z85",
              help="Let another public key act as this user; repeat for more.")
@click.option("--remove-key", "remove_keys", type=PUBLIC_KEY, multiple=True, metavar="Z85",
              help="Refuse this key from now on; repeat for more.")
@global_options()
def user_set(name: str, groups: tuple[str, ...], role: str | None,
             priorities: tuple[int, int] | None, max_open: int | None, no_groups: bool,
             add_keys: tuple[str, ...], remove_keys: tuple[str, ...]) -> None:
    """Change a user's groups, role, priorities, open-request cap or keys.

    --group replaces every group the user had.

    \b
    Examples:
      boruta admin user set alice --group lab --group ci
      boruta admin user set alice --role admin --priorities 1-16
      boruta admin user set alice --add-key 'NEW-KEY' --remove-key 'OLD-KEY'
    """
    if no_groups and groups:
        raise click.UsageError("--no-groups and --group contradict each other")
    args = _user_args(groups, role, priorities, max_open)
    if no_groups:
        args["groups"] = []
    if not (add_keys or remove_keys) and all(v is None for v in args.values()):
        raise click.UsageError("nothing to change: give --group, --no-groups, --role, "
                               "--priorities, --max-open, --add-key or --remove-key")
    with client_session() as client:
        keys = None
        if add_keys or remove_keys:
            keys = _changed_keys(_find_user(client, name), add_keys, remove_keys)
        doc = client.user_set(name=name, keys=keys, **args)
    show({"user": doc}, lambda _: click.echo(f"User {name} changed ({_describe(doc)}, "
                                             f"{len(doc.get('keys') or [])} key(s))."))


def _find_user(client: Any, name: str) -> dict[str, Any]:
    for doc in client.user_list():
        if doc.get("name") == name:
            return doc
    raise CliError(f"there is no user {name!r} (boruta admin user list)", code="not_found",
                   exit_code=1)


def _changed_keys(doc: dict[str, Any], add: Sequence[str], remove: Sequence[str]) -> list[str]:
    keys = list(doc.get("keys") or [])
    unknown = [k for k in remove if k not in keys]
    if unknown:
        raise click.UsageError(f"user {doc['name']} holds no key {unknown[0]}")
    keys = [k for k in keys if k not in remove]
    keys += [k for k in dict.fromkeys(add) if k not in keys]
    if not keys:
        raise click.UsageError(f"user {doc['name']} would hold no key: add one first, or "
                               "remove the user")
    return keys


@user.command("remove")
@click.argument("name", type=USER_NAME)
@global_options()
def user_remove(name: str) -> None:
    """Remove a user: their connections are refused from now on.

    Their requests stay (an admin may still close them).

    \b
    Example:
      boruta admin user remove alice
    """
    with client_session() as client:
        client.user_remove(name=name)
    show({"removed": name}, lambda _: click.echo(f"User {name} removed."))


@user.command("list")
@global_options()
def user_list() -> None:
    """List the users.

    \b
    Examples:
      boruta admin user list
      boruta admin user list --json | jq '.[].name'
    """
    with client_session() as client:
        docs = client.user_list()
    show(docs, _print_users)


def _print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table as `request list` and `worker list` print theirs."""
    table = out._table(*columns)
    for row in rows:
        out._row(table, *row)
    out.Printer().print(table)


def _print_users(docs: Sequence[dict[str, Any]]) -> None:
    if not docs:
        click.echo("No users.")
        return
    _print_rows(("NAME", "ROLE", "GROUPS", "PRIORITIES", "MAX OPEN", "KEYS"),
                   [(d.get("name"), d.get("role"), out.fmt_groups(d.get("groups") or []),
                     "-".join(str(p) for p in d.get("priorities") or []), d.get("max_open"),
                     len(d.get("keys") or [])) for d in docs])


@user.command("token")
@click.argument("name", type=USER_NAME)
@click.option("--revoke", metavar="TOKEN",
              help="Revoke this token (or its SHA-256, as `user list --json` shows it) "
                   "instead of making one.")
@global_options()
def user_token(name: str, revoke: str | None) -> None:
    """Make an HTTP token for a user and print it once; or --revoke one.

    The server keeps only the token's SHA-256: a lost token cannot be shown
    again (make another, and revoke the old one by its hash). A user may
    hold up to 16 tokens.

    \b
    Examples:
      boruta admin user token alice
      boruta admin user token alice --json | jq -r .url
      boruta admin user token alice --revoke 'TOKEN'
    """
    if revoke is not None:
        hashed = revoke if is_token_hash(revoke) else token_hash(revoke)
        with client_session() as client:
            doc = client.user_token(name=name, token_hash=hashed, revoke=True)
        show({"user": doc, "revoked": hashed},
             lambda _: click.echo(f"Token {hashed[:8]}... of {name} revoked."))
        return
    config = client_config()
    host = http_host(config.server or CLIENT_ENDPOINT)
    token = secrets.token_urlsafe(32)
    hashed = token_hash(token)
    try:
        with client_session() as client:
            doc = client.user_token(name=name, token_hash=hashed)
    except BorutaError as exc:
        if not is_unreachable(exc):
            raise
        raise CliError(f"{exc.message}; the server may have taken the token, which is not "
                       f"shown: revoke it with `boruta admin user token {name} --revoke "
                       f"{hashed}` and make another", code=exc.code,
                       exit_code=EXIT_UNREACHABLE) from None
    url = f"http://{name}:{token}@{host}"
    show({"user": doc, "token": token, "url": url},
         lambda _: _print_token(name, token, url, f"http://{host}",
                                config.credentials is None))


def http_host(server: str) -> str:
    """HOST:PORT of the server's HTTP face, guessed from its client endpoint: the same
    host (127.0.0.1 for a wildcard or a local socket) at the default HTTP port."""
    scheme, _, rest = server.partition("://")
    host = "127.0.0.1"
    if scheme == "tcp":
        try:
            found = split_host_port(rest, allow_wildcard=True)[0]
        except AddressError:
            found = ""
        if found and found not in WILDCARD_HOSTS:
            host = found
    return join_host_port(host, HTTP_PORT)


def _print_token(name: str, token: str, url: str, base: str, plain: bool) -> None:
    click.echo(f"Token for {name} (shown only now; the server keeps its SHA-256):")
    click.echo(f"  {token}")
    click.echo("Give it to them privately. Upstream's Go client takes it in its base URL:")
    click.echo(f'  client.NewBorutaClient("{url}")')
    click.echo("Other HTTP clients send it as a header:")
    click.echo(f'  curl -H "Authorization: Bearer {token}" {base}/api/v1/workers/')
    click.echo(f"(The HTTP port is the default, {HTTP_PORT}: change it if the server's "
               "http_listen says otherwise.)")
    if plain:
        click.echo("(Your client config names no server key: the server runs without "
                   "encryption, and treats every HTTP request as an admin's; the token is "
                   "not checked yet.)")


# --------------------------------------------------------------------------- dryads

@click.group("dryad", context_settings=CONTEXT)
@global_options()
def dryad() -> None:
    """Enrol, revoke and list the dryads' keys (admins only).

    A dryad may register only the worker UUID its key was enrolled for.

    \b
    Examples:
      boruta admin dryad enroll 4f1a2b3c-0000-4000-8000-000000000001
      boruta admin dryad list
      boruta admin dryad revoke 4f1a2b3c-0000-4000-8000-000000000001
    """


@dryad.command("enroll")
@click.argument("uuid", type=UUID)
@click.option("--public-key", type=PUBLIC_KEY, metavar="Z85",
              help="The dryad's own public key; no key file is made.")
@click.option("--out", "out_file", metavar="FILE",
              help="Where to write the dryad's new key file (default ./UUID.key, mode 0600).")
@global_options()
def dryad_enroll(uuid: str, public_key: str | None, out_file: str | None) -> None:
    """Let a dryad's key register one worker UUID; make its key file unless --public-key.

    Prints the two settings of the dryad's config (dryad.toml) that use it.

    \b
    Examples:
      boruta admin dryad enroll 4f1a2b3c-0000-4000-8000-000000000001
      boruta admin dryad enroll 3f2a9c1e-6b1d-4e8a-9c55-0d7e2b41a9f0 --out /secure/rpi4-07.key
    """
    server_key = _server_key()
    if public_key is not None:
        if out_file is not None:
            raise click.UsageError("--out makes a new key file; --public-key uses the dryad's "
                                   "own key: give one of them")
        with client_session() as client:
            doc = client.dryad_enroll(uuid=uuid, key=public_key)
        show({"enrolment": doc, "server_key": server_key},
             lambda _: _print_enrolled(uuid, None, server_key))
        return
    key_path = Path(out_file) if out_file else Path(f"{safe_file_name(uuid)}.key")
    _free(key_path)
    public, key_path = _write_key(key_path, f"boruta dryad of worker {uuid}")

    def call() -> Any:
        with client_session() as client:
            return client.dryad_enroll(uuid=uuid, key=public)
    doc = _written_before_the_call([key_path], call)
    show({"enrolment": doc, "key_file": str(key_path.absolute()), "server_key": server_key},
         lambda _: _print_enrolled(uuid, key_path, server_key))


def _print_enrolled(uuid: str, key_path: Path | None, server_key: str | None) -> None:
    click.echo(f"Worker {uuid} enrolled.")
    if key_path is not None:
        click.echo(f"Wrote {key_path} (the dryad's secret key, mode 0600): copy it to the "
                   "board, beside its dryad.toml, privately.")
    click.echo("In the dryad's config (dryad.toml):")
    if server_key is not None:
        click.echo(f'  server_key = "{server_key}"')
    else:
        click.echo("  server_key = (the server's public key; your client config names none: "
                   "the server runs without encryption)")
    click.echo(f'  key_file = "{key_path.name if key_path is not None else "THE-DRYAD.key"}"')


@dryad.command("revoke")
@click.argument("uuid", type=UUID)
@global_options()
def dryad_revoke(uuid: str) -> None:
    """Forget a worker's enrolled key: its dryad is refused from now on.

    \b
    Example:
      boruta admin dryad revoke 4f1a2b3c-0000-4000-8000-000000000001
    """
    with client_session() as client:
        client.dryad_revoke(uuid=uuid)
    show({"revoked": uuid}, lambda _: click.echo(f"Enrolment of worker {uuid} revoked."))


@dryad.command("list")
@global_options()
def dryad_list() -> None:
    """List the enrolled workers and their dryads' public keys.

    \b
    Examples:
      boruta admin dryad list
      boruta admin dryad list --json
    """
    with client_session() as client:
        docs = client.dryad_list()

    def for_people(_: Any) -> None:
        if not docs:
            click.echo("No dryads enrolled.")
        else:
            _print_rows(("UUID", "KEY"), [(d.get("uuid"), d.get("key")) for d in docs])
    show(docs, for_people)
