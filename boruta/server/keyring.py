"""The server's own keys, the bootstrap admin's, and the client config that lets `boruta` in.

The identity directory (`identity_dir`, by default the state directory)
holds, each made on the first start and kept 0600 in a 0700 directory:

- `server.key`: the server's CurveZMQ keypair; clients and dryads are given
  its public half (`server_key`);
- `admin.key`: the bootstrap admin's keypair, always an admin
  (boruta.server.identities); whoever can read this file runs the farm;
- `client.toml`: a client config for that admin, rewritten at every start
  with the endpoints the server is bound to.

So that `boruta` on the same machine works with no setup, the server also
writes the user's own client config (`client_config`, by default
~/.config/boruta/client.toml) unless a person wrote that file.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from boruta.core.errors import ConfigError
from boruta.transport.addresses import connectable_endpoint
from boruta.transport.credentials import (KeyPair, new_keypair, read_key_file, write_client_config,
                                          write_key_file, written_by_server)

log = logging.getLogger("boruta.server")

SERVER_KEY_FILE = "server.key"
ADMIN_KEY_FILE = "admin.key"
ADMIN_CLIENT_CONFIG = "client.toml"
LOCAL_HOST = "tcp://127.0.0.1:0"      # where a client on this machine reaches a wildcard bind


@dataclass(frozen=True)
class Keyring:
    directory: Path
    server: KeyPair
    admin: KeyPair

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> "Keyring":
        """The keys in `directory`, made there first if missing (ConfigError if unusable)."""
        path = Path(directory).resolve()       # client configs name its files absolutely
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if path.stat().st_mode & 0o077:
                path.chmod(0o700)
                log.warning("identity directory %s was readable by others; made it 0700", path)
        except OSError as exc:
            raise ConfigError(f"cannot use it: {exc}", field="identity_dir",
                              source=str(path)) from None
        return cls(path, _load_or_make(path / SERVER_KEY_FILE, "the Boruta server's key"),
                   _load_or_make(path / ADMIN_KEY_FILE, "the Boruta bootstrap admin's key"))

    @property
    def admin_config(self) -> Path:
        return self.directory / ADMIN_CLIENT_CONFIG

    def write_client_configs(self, endpoints: Mapping[str, str],
                             local_config: str | None) -> list[Path]:
        """The admin's client config here, and the user's own unless a person wrote it."""
        server = connectable_endpoint(endpoints["listen"], LOCAL_HOST)
        events = connectable_endpoint(endpoints["events"], LOCAL_HOST)
        written = [write_client_config(self.admin_config, server=server, events=events,
                                       server_key=self.server.public,
                                       key_file=str(self.directory / ADMIN_KEY_FILE),
                                       by_server=True)]
        if local_config:
            local = Path(local_config).expanduser()
            if local.exists() and not written_by_server(local):
                log.info("client config %s was written by a person: left as it is "
                         "(the admin's is %s)", local, self.admin_config)
            else:
                try:
                    written.append(write_client_config(
                        local, server=server, events=events, server_key=self.server.public,
                        key_file=str(self.directory / ADMIN_KEY_FILE), by_server=True))
                except (OSError, ConfigError) as exc:
                    log.warning("cannot write the client config %s: %s", local, exc)
        return written


def _load_or_make(path: Path, comment: str) -> KeyPair:
    if path.exists():
        return read_key_file(path)
    pair = new_keypair()
    try:
        write_key_file(path, pair, comment=comment)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}", field="identity_dir") from None
    log.info("made %s", path)
    return pair
