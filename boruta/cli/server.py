"""`boruta server` runs the server; `boruta ping` asks a running one who it is."""
from __future__ import annotations

from typing import Callable

import click

from boruta.cli import output as out
from boruta.cli.errors import CliError, exc_text, refused
from boruta.cli.options import (
    CONTEXT,
    SETTING,
    global_options,
    help_text,
    json_option,
    show,
    with_ports,
)
from boruta.cli.session import ping as ask_ping
from boruta.core.errors import ConfigError

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]
LOG_FORMATS = ["json", "text"]


def log_options(default_level: str | None = None,
                default_format: str | None = None) -> Callable[[Callable], Callable]:
    """--log-level and --log-format, as `boruta server` and `boruta dryad` take them."""
    def decorate(f: Callable) -> Callable:
        f = click.option("--log-format", type=click.Choice(LOG_FORMATS, case_sensitive=False),
                         default=default_format, show_default=default_format is not None,
                         help="json or text.")(f)
        f = click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
                         default=default_level, show_default=default_level is not None,
                         metavar="L", help="debug, info, warning, error or critical.")(f)
        return f
    return decorate


@click.command("server", context_settings=CONTEXT)
@click.option("--config", "config", metavar="FILE", help="Server configuration (TOML).")
@click.option("--state-dir", metavar="DIR",
              help="Where the server keeps its state (default $XDG_STATE_HOME/boruta, else "
                   "~/.local/state/boruta; :memory: keeps nothing).")
@click.option("--listen", metavar="EP",
              help=help_text("Client endpoint (default {LISTEN_CLIENTS})."))
@click.option("--dryad-listen", metavar="EP",
              help=help_text("Dryad endpoint (default {LISTEN_DRYADS})."))
@click.option("--events", "events_ep", metavar="EP",
              help=help_text("Event stream endpoint (default {LISTEN_EVENTS})."))
@click.option("--public-host", metavar="HOST", help="Host name clients use to reach tunnels.")
@click.option("--insecure", is_flag=True, default=None,
              help="Development only: no encryption, no authentication, every peer an admin "
                   "(logged as a warning at every start).")
@click.option("--set", "settings_", type=SETTING, multiple=True, metavar="KEY=VALUE",
              help="Any other setting of the configuration file, e.g. --set heartbeat_interval=0.5 "
                   "(repeatable; wins over the file and the flags above).")
@log_options()
@json_option("Report a failure to start as a JSON document on stdout.")
def server(config: str | None, state_dir: str | None, listen: str | None,
           dryad_listen: str | None, events_ep: str | None, public_host: str | None,
           insecure: bool | None, log_level: str | None, log_format: str | None,
           settings_: tuple[tuple[str, str], ...]) -> None:
    """Run the Boruta server (until interrupted).

    Options given here override the configuration file. On its first start
    the server makes its keys and a bootstrap admin's in its state directory
    and writes the client config (~/.config/boruta/client.toml) that lets
    `boruta` on this machine in as that admin; every peer must prove a key
    (CurveZMQ) from then on. `boruta admin user add` and `boruta admin dryad
    enroll` let others in.

    \b
    Examples:
      boruta server --state-dir /var/lib/boruta
      boruta server --config /etc/boruta/server.toml --public-host boruta.example.com
    """
    overrides = {k: v for k, v in {
        "state_dir": state_dir, "listen": listen, "dryad_listen": dryad_listen,
        "events": events_ep, "public_host": public_host, "insecure": insecure,
        "log_level": log_level.lower() if log_level else None,
        "log_format": log_format.lower() if log_format else None,
    }.items() if v is not None}
    overrides.update(settings_)
    # Imported here: the server's modules are not needed by the client commands.
    from boruta.server.app import run_server
    from boruta.server.config import load_server_config
    try:
        cfg = load_server_config(config, overrides)
    except ConfigError as exc:
        raise CliError(f"invalid server configuration: {exc.message}") from None
    except OSError as exc:
        raise CliError(f"invalid server configuration: {exc_text(exc)}") from None
    try:
        rc = run_server(cfg)
    except KeyboardInterrupt:
        return
    except OSError as exc:
        raise refused(f"the server stopped: {exc_text(exc)}", "server_failed") from None
    if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
        click.get_current_context().exit(rc)    # the server has logged why


@click.command("ping", context_settings=CONTEXT)
@global_options()
@with_ports
def ping() -> None:
    """Ask the server who it is: its version, protocol, matcher and endpoints.

    Exit 0 when it answers, 3 when it does not: a quick check that the
    server named by --server (or $BORUTA_SERVER) is up.

    \b
    Examples:
      boruta ping
      boruta ping --server tcp://boruta.example.com:{CLIENT_PORT} --json
    """
    show(ask_ping(), out.print_ping)
