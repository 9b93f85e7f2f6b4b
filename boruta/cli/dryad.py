"""`boruta dryad` runs the agent next to a device; `boruta dryad init` writes its configuration."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from boruta.cli import output as out
from boruta.cli.errors import CliError, exc_text, refused
from boruta.cli.options import (CAP, CONTEXT, caps_dict, help_text, json_mode, json_option,
                                with_ports)
from boruta.cli.server import log_options

DRYAD_BOARDS = ["simulated", "stm"]
DRYAD_SESSIONS = ["embedded", "system"]
CONFIG_ENV = "BORUTA_DRYAD_CONFIG"
_CONFIG_KEY = "boruta.dryad_config"


def _config_path(path: str | None) -> str:
    from boruta.dryad.config import DEFAULT_CONFIG_PATH
    return path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


@click.group("dryad", invoke_without_command=True, context_settings=CONTEXT)
@click.option("--config", metavar="FILE",
              help=f"Dryad configuration (default: ${CONFIG_ENV}, then /etc/boruta/dryad.conf).")
@log_options(default_level="info", default_format="text")
@json_option("Report a failure to start as a JSON document on stdout.")
@click.pass_context
@with_ports
def dryad(ctx: click.Context, config: str | None, log_level: str, log_format: str) -> None:
    """Run a dryad: the agent next to a device under test (until interrupted).

    It connects to the server's dryad endpoint, registers the caps of its
    configuration, heartbeats, and prepares a fresh SSH session for every
    job. Write a configuration first with `boruta dryad init`. Prints
    `boruta dryad ready uuid=... ssh=...` once registered; SIGTERM or
    SIGINT stop it (exit 0). A bad configuration exits 2, naming the field.
    With `server_key` and `key_file` in the configuration the link uses
    CURVE; a key the server refuses is logged (enrol it with `boruta admin
    dryad enroll UUID`) and the dryad keeps trying.

    \b
    Examples:
      boruta dryad init --caps device_type=rpi4 --config dryad.toml
      boruta dryad --config dryad.toml
    """
    ctx.meta[_CONFIG_KEY] = config
    if ctx.invoked_subcommand is not None:
        return
    # Imported here: the agent's modules (paramiko, serial) are not needed by other commands.
    from boruta.dryad.agent import AgentError, run_agent
    from boruta.dryad.config import ConfigError, load_config
    try:
        cfg = load_config(_config_path(config))
        cfg.credentials()                # a bad key file stops it now, naming the file
    except ConfigError as exc:
        raise CliError(f"invalid dryad configuration: {exc}", code="bad_config") from None
    try:
        rc = run_agent(cfg, log_level=log_level.lower(), log_format=log_format.lower())
    except AgentError as exc:
        raise refused(f"the dryad cannot run: {exc}", "dryad_failed") from None
    except KeyboardInterrupt:
        return
    if rc:
        ctx.exit(rc)


@dryad.command("init", context_settings=CONTEXT)
@click.option("--config", metavar="FILE",
              help=f"Where to write it (default: the dryad's --config, ${CONFIG_ENV}, "
                   "then /etc/boruta/dryad.conf). An existing file is never overwritten.")
@click.option("--caps", "caps", type=CAP, multiple=True, metavar="KEY=VALUE",
              help="A capability of this worker (repeatable). A fresh UUID is added unless "
                   "--caps UUID=... gives one.")
@click.option("--server", "server_ep", metavar="EP",
              help=help_text("The server's dryad endpoint (default {DRYAD_ENDPOINT})."))
@click.option("--board", type=click.Choice(DRYAD_BOARDS), default="simulated", show_default=True,
              help="simulated (anywhere) or stm (the MuxPi's microcontroller).")
@click.option("--session", type=click.Choice(DRYAD_SESSIONS), default="embedded",
              show_default=True,
              help="embedded (an SSH server inside the dryad) or system (a real account for "
                   "the board's sshd; needs root).")
@click.option("--ssh-listen", metavar="HOST:PORT",
              help="Where the embedded SSH server listens (default 127.0.0.1:0, a free port; "
                   "give a fixed port so that restarts keep the worker's configuration).")
@click.option("--user", metavar="NAME", help="The session user of every job (default boruta-user).")
@click.option("--server-key", metavar="KEY",
              help="The server's public key (`boruta server` prints it); with --key-file. "
                   "Without: plain text, for a server run with insecure = true.")
@click.option("--key-file", metavar="FILE",
              help="This dryad's key file, as `boruta admin dryad enroll UUID` writes it "
                   "(a relative path is relative to the configuration's directory).")
@json_option("Print what was written as one JSON document.")
@click.pass_context
@with_ports
def dryad_init(ctx: click.Context, config: str | None, caps: tuple[tuple[str, str], ...],
               server_ep: str | None, board: str, session: str, ssh_listen: str | None,
               user: str | None, server_key: str | None, key_file: str | None) -> None:
    """Write a commented dryad configuration with a fresh UUID.

    Edit it if need be, then start the dryad with `boruta dryad --config FILE`.

    \b
    Examples:
      boruta dryad init --config dryad.toml --caps device_type=rpi4
      boruta dryad init --caps device_type=rpi4 --server tcp://boruta.example.com:{DRYAD_PORT} \\
          --board stm --session system
    """
    from boruta.dryad.config import ConfigError, write_default_config
    parent_config = ctx.parent.meta.get(_CONFIG_KEY) if ctx.parent else None
    path = _config_path(config or parent_config)
    given = {"server": server_ep, "user": user, "ssh_listen": ssh_listen,
             "server_key": server_key, "key_file": key_file}
    kwargs: dict[str, Any] = {"caps": caps_dict(caps), "board": board, "session": session,
                              **{k: v for k, v in given.items() if v is not None}}
    parent = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.exists(path):
            os.makedirs(parent, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {parent}: {exc_text(exc)}", code="bad_config") from None
    try:
        written = write_default_config(path, **kwargs)
    except ConfigError as exc:
        code = "exists" if isinstance(exc, FileExistsError) else "bad_config"
        raise CliError(f"no configuration written: {exc}", code=code) from None
    if json_mode():
        out.print_json({"config": path, "uuid": written.uuid, "caps": dict(written.caps),
                        "server": written.server, "board": written.board.backend,
                        "session": written.session.backend, "user": written.user,
                        "server_key": written.server_key or None,
                        "key_file": written.key_file or None})
    else:
        sys.stdout.write(f"Wrote {path} for dryad {written.uuid}.\n"
                         f"Start it with: boruta dryad --config {path}\n")
