"""Who a client is and which server it trusts: CURVE key files and the client config.

A connecting socket needs the server's public key and its own keypair
(`Credentials`). Keypairs live in *key files*: ZeroMQ certificate files (ZPL,
as `zmq.auth.create_certificates` writes them), mode 0600, because the
secret key is the user's identity. The client config (`client.toml`) says
where the server is and which key files to use; flags and environment
variables override it, so one reader serves the CLI, `boruta.Client` and
the server writing the local admin's config.
"""
from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import zmq
import zmq.auth
from zmq.utils import z85

from boruta.core.addresses import AddressError
from boruta.core.errors import ConfigError
from boruta.transport.addresses import parse_endpoint

__all__ = [
    "CLIENT_CONFIG_ENV", "KEY_FILE_ENV", "SERVER_ENV", "SERVER_KEY_ENV", "WRITTEN_BY_SERVER",
    "ClientConfig", "Credentials", "KeyPair", "check_public_key", "client_config_path",
    "load_client_config", "new_keypair", "read_key_file", "toml_string", "write_client_config",
    "write_key_file", "written_by_server",
]

SERVER_ENV = "BORUTA_SERVER"
SERVER_KEY_ENV = "BORUTA_SERVER_KEY"
KEY_FILE_ENV = "BORUTA_KEY_FILE"
CLIENT_CONFIG_ENV = "BORUTA_CLIENT_CONFIG"

#: The first line of a client config the server wrote: the server may rewrite such a
#: file at every start, never one a person wrote.
WRITTEN_BY_SERVER = "# written by boruta server"

KEY_LENGTH = 40           # a 32-byte CURVE key in Z85 text


# --------------------------------------------------------------------------- keys

@dataclass(frozen=True)
class KeyPair:
    """A CURVE keypair as Z85 text. Its repr hides the secret, so logs never show it."""

    public: str
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public!r}, secret=<hidden>)"


def new_keypair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def _z85_key(text: Any) -> bytes | None:
    """The 32 bytes of a Z85 key, or None when `text` is not one."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str) or len(text) != KEY_LENGTH:
        return None
    try:
        raw = z85.decode(text)
    except (ValueError, KeyError, IndexError, TypeError, UnicodeEncodeError):
        return None
    return raw if len(raw) == 32 else None


def check_public_key(text: Any, what: str) -> str:
    """`text` stripped if it is a CURVE public key (40 Z85 characters); else ConfigError
    naming `what` (the setting, variable or flag it came from)."""
    key = text.strip() if isinstance(text, str) else text
    if _z85_key(key) is None:
        shown = repr(key) if isinstance(key, str) and len(key) <= 60 else "the value"
        raise ConfigError(f"{shown} is not a CURVE public key ({KEY_LENGTH} Z85 characters, "
                          "as `boruta server` prints it)", field=what)
    return key


def _make_dirs(directory: Path) -> None:
    """Create the missing directories above a key or config file, 0700 each."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)


def _write_private(path: str | os.PathLike[str], text: str, overwrite: bool,
                   what: str) -> Path:
    """Write `text` to `path` atomically, mode 0600 (a temp file in the same directory,
    then renamed); without `overwrite` an existing file is a ConfigError."""
    target = Path(path)
    source = f"{what} {target}"
    try:
        _make_dirs(target.parent.absolute())
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent.absolute())
    except OSError as exc:
        raise ConfigError(f"cannot write it: {exc.strerror or exc}", source=source) from None
    try:
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, target)
            else:
                os.link(tmp, target)          # fails if it exists, atomically
        except FileExistsError:
            raise ConfigError("already exists; not overwriting it", source=source) from None
        except OSError as exc:
            raise ConfigError(f"cannot write it: {exc.strerror or exc}", source=source) from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return target


def write_key_file(path: str | os.PathLike[str], pair: KeyPair, *, comment: str = "",
                   overwrite: bool = False) -> Path:
    """Write a keypair as a ZeroMQ secret certificate, mode 0600 (missing directories 0700).

    `comment` (one line) says whose key it is. An existing file is kept unless
    `overwrite`: replacing a key file loses an identity.
    """
    check_public_key(pair.public, "public key")
    if _z85_key(pair.secret) is None:
        raise ConfigError("the secret key is not 40 Z85 characters", source=f"key file {path}")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"#   ****  Generated on {now} by boruta  ****",
             "#   ZeroMQ CURVE **Secret** Certificate",
             "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."]
    if comment:
        lines.append("#   " + " ".join(str(comment).split()))
    lines += ["", "metadata", "curve",
              f'    public-key = "{pair.public}"',
              f'    secret-key = "{pair.secret}"', ""]
    return _write_private(path, "\n".join(lines), overwrite, "key file")


def read_key_file(path: str | os.PathLike[str]) -> KeyPair:
    """The keypair in a key file; ConfigError naming the file and what is wrong with it.

    A file others may read is refused: its secret is no longer only its owner's.
    """
    p = Path(path)
    source = f"key file {p}"
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ConfigError("no such file", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", source=source) from None
    if not p.is_file():
        raise ConfigError("not a regular file", source=source)
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(f"others may read it (mode {mode & 0o777:04o}); "
                          f"make it private: chmod 600 {p}", source=source)
    try:
        public, secret = zmq.auth.load_certificate(p)
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", source=source) from None
    except (ValueError, IndexError):
        raise ConfigError("no public-key in it: not a ZeroMQ certificate "
                          "(`boruta admin user add` writes key files)", source=source) from None
    if secret is None:
        raise ConfigError("no secret-key in it: a public certificate is not an identity",
                          source=source)
    pub, sec = _z85_key(public), _z85_key(secret)
    if pub is None:
        raise ConfigError("its public-key is not 40 Z85 characters", source=source)
    if sec is None:
        raise ConfigError("its secret-key is not 40 Z85 characters", source=source)
    if zmq.curve_public(secret) != public:
        raise ConfigError("its public-key does not belong to its secret-key", source=source)
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


@dataclass(frozen=True)
class Credentials:
    """What a connecting socket needs for CURVE: the server's public key and our keypair."""

    server_key: str
    client: KeyPair

    @property
    def public_key(self) -> str:
        return self.client.public

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client (before it connects)."""
        sock.curve_serverkey = self.server_key.encode("ascii")
        sock.curve_publickey = self.client.public.encode("ascii")
        sock.curve_secretkey = self.client.secret.encode("ascii")


# --------------------------------------------------------------------------- client config

@dataclass(frozen=True)
class ClientConfig:
    """Where the server is and how to reach it; None: not given (the caller's default)."""

    server: str | None = None
    events: str | None = None
    credentials: Credentials | None = None
    path: Path | None = None


def client_config_path(env: Mapping[str, str] | None = None) -> Path:
    """$BORUTA_CLIENT_CONFIG, else $XDG_CONFIG_HOME/boruta/client.toml, else
    ~/.config/boruta/client.toml."""
    environ = os.environ if env is None else env
    explicit = environ.get(CLIENT_CONFIG_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = environ.get("XDG_CONFIG_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "boruta" / "client.toml"


def _read_file(path: Path) -> dict[str, Any]:
    source = f"client config {path}"
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", source=source) from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None
    found: dict[str, Any] = {}
    for key in ("server", "events", "server_key", "key_file"):
        value = doc.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            raise ConfigError("must be a string", field=key, source=source)
        found[key] = (value.strip(), source, key)
    if "key_file" in found:
        value, src, name = found["key_file"]
        found["key_file"] = (str(path.parent / Path(value).expanduser()), src, name)
    return found


def _endpoint(value: str, source: str | None, name: str | None) -> str:
    try:
        return parse_endpoint(value)
    except AddressError as exc:
        raise ConfigError(str(exc), field=name, source=source) from None


def load_client_config(path: str | os.PathLike[str] | None = None,
                       env: Mapping[str, str] | None = None, *, server: str | None = None,
                       server_key: str | None = None,
                       key_file: str | os.PathLike[str] | None = None) -> ClientConfig:
    """The client config: the file (if it exists), then $BORUTA_SERVER, $BORUTA_SERVER_KEY
    and $BORUTA_KEY_FILE, then the arguments (the CLI's flags); the last one given wins.

    The server key and the key file go together: one without the other is a
    ConfigError naming what is missing. Every bad value is a ConfigError naming
    where it came from.
    """
    environ = os.environ if env is None else env
    if path is not None:
        file_path: Path | None = Path(path).expanduser()
    else:
        try:
            file_path = client_config_path(environ)
        except (RuntimeError, KeyError):      # no home directory to look in
            file_path = None
    # name -> (value, source, field): the layers in order, later ones win
    found = _read_file(file_path) if file_path is not None else {}
    for name, var in (("server", SERVER_ENV), ("server_key", SERVER_KEY_ENV),
                      ("key_file", KEY_FILE_ENV)):
        value = environ.get(var, "").strip()
        if value:
            found[name] = (value, var, None)
    for name, value in (("server", server), ("server_key", server_key),
                        ("key_file", key_file)):
        if value is not None and str(value).strip():
            found[name] = (os.fspath(value).strip(), None, name)

    endpoint = _endpoint(*found["server"]) if "server" in found else None
    events = _endpoint(*found["events"]) if "events" in found else None
    return ClientConfig(server=endpoint, events=events,
                        credentials=_credentials(found.get("server_key"), found.get("key_file")),
                        path=file_path)


def _credentials(server_key: tuple[str, str | None, str | None] | None,
                 key_file: tuple[str, str | None, str | None] | None) -> Credentials | None:
    if server_key is None and key_file is None:
        return None
    if key_file is None:
        assert server_key is not None
        raise ConfigError("a server key needs your key file too (key_file in client.toml, "
                          f"--key-file or ${KEY_FILE_ENV})",
                          field=server_key[2], source=server_key[1])
    if server_key is None:
        raise ConfigError("a key file needs the server's public key too (server_key in "
                          f"client.toml, --server-key or ${SERVER_KEY_ENV})",
                          field=key_file[2], source=key_file[1])
    value, source, name = server_key
    try:
        key = check_public_key(value, "server_key")
    except ConfigError as exc:           # named after where it came from
        raise ConfigError(exc.problem, field=name, source=source) from None
    return Credentials(key, read_key_file(Path(key_file[0]).expanduser()))


def toml_string(text: str) -> str:
    """`text` as a TOML basic string (control characters escaped)."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def write_client_config(path: str | os.PathLike[str], *, server: str, events: str | None,
                        server_key: str | None, key_file: str | os.PathLike[str] | None,
                        by_server: bool = False) -> Path:
    """Write a client config, mode 0600 (replacing the file). `by_server` marks it as the
    server's own (WRITTEN_BY_SERVER), which the server may rewrite at its next start."""
    if (server_key is None) != (key_file is None):
        raise ConfigError("server_key and key_file go together", source=f"client config {path}")
    lines = [WRITTEN_BY_SERVER] if by_server else []
    lines.append(f"server = {toml_string(_endpoint(server, None, 'server'))}")
    if events is not None:
        lines.append(f"events = {toml_string(_endpoint(events, None, 'events'))}")
    if server_key is not None and key_file is not None:
        lines.append(f"server_key = {toml_string(check_public_key(server_key, 'server_key'))}")
        lines.append("# your key file; a relative path is relative to this file's directory")
        lines.append(f"key_file = {toml_string(os.fspath(key_file))}")
    return _write_private(path, "\n".join(lines) + "\n", True, "client config")


def written_by_server(path: str | os.PathLike[str]) -> bool:
    """True if the server wrote this client config (so it may write it again)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\r\n") == WRITTEN_BY_SERVER
    except OSError:
        return False
