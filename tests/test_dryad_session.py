"""Session backends, with paramiko as a real SSH client.

accounts: job keys and user names.
EmbeddedSSHServer: exec, shell, SFTP, the one-key rule, revocation.
SystemSessionBackend: the error tables everywhere; the real account only as
root (marked `system`), with a throwaway user that is always removed.
"""
from __future__ import annotations

import io
import os
import pwd
import secrets
import socket
import stat
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from boruta.dryad.accounts import USER_NAME_RULE, check_username, is_user_name, parse_public_key
from boruta.dryad.embedded_ssh import EmbeddedSSHServer
from boruta.dryad.session import SessionBackend, SessionError
from boruta.dryad.system_session import SystemSessionBackend, command_error

USER = "boruta-user"


def ed25519_key() -> paramiko.PKey:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()
    return paramiko.Ed25519Key(file_obj=io.StringIO(pem))


def openssh(key: paramiko.PKey, comment: str = "boruta-job") -> str:
    return f"{key.get_name()} {key.get_base64()} {comment}"


@pytest.fixture(scope="module")
def keys():
    return [ed25519_key() for _ in range(3)]


@pytest.fixture(scope="module")
def rsa_key():
    return paramiko.RSAKey.generate(2048)


@pytest.fixture
def server(tmp_path):
    s = EmbeddedSSHServer("127.0.0.1", 0, workdir_base=str(tmp_path / "jobs"))
    s.start()
    yield s
    s.stop()


def connect(server: EmbeddedSSHServer, key: paramiko.PKey, user: str = USER) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    host, port = server.address()
    # Pin the server's host key: no trust-on-first-use in tests.
    client.get_host_keys().add(f"[{host}]:{port}", server.host_key.get_name(), server.host_key)
    client.connect(host, port, username=user, pkey=key, look_for_keys=False,
                   allow_agent=False, timeout=5, banner_timeout=5, auth_timeout=5)
    return client


def run(client: paramiko.SSHClient, command: str, stdin: bytes | None = None):
    i, o, e = client.exec_command(command, timeout=10)
    if stdin is not None:
        i.write(stdin)
        i.channel.shutdown_write()
    out, err = o.read(), e.read()
    return out.decode(), err.decode(), o.channel.recv_exit_status()


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def read_until(chan: paramiko.Channel, marker: bytes, timeout: float = 5.0) -> bytes:
    chan.settimeout(timeout)
    deadline = time.monotonic() + timeout
    buf = b""
    while marker not in buf:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} not seen in {buf!r}")
        data = chan.recv(4096)
        if not data:
            raise AssertionError(f"channel closed before {marker!r}; got {buf!r}")
        buf += data
    return buf


# --- keys --------------------------------------------------------------------------


def test_parse_public_key(keys, rsa_key):
    k = parse_public_key(openssh(keys[0], "me@host with spaces"))
    assert k.type == "ssh-ed25519" and k.comment == "me@host with spaces"
    assert k.matches(keys[0]) and not k.matches(keys[1])
    assert k.openssh == f"ssh-ed25519 {keys[0].get_base64()}"
    assert parse_public_key(f"  ssh-rsa {rsa_key.get_base64()}\n").matches(rsa_key)


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("   ", "empty"),
    (None, "empty"),
    ("ssh-ed25519", "TYPE BASE64"),
    ("ssh-ed25519 not*base64", "base64"),
    ("ssh-ed25519 AAAA", "does not decode"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "unsupported"),
    ('command="rm -rf /" ssh-ed25519 AAAA', "unsupported"),
])
def test_parse_public_key_refuses(text, message):
    with pytest.raises(SessionError, match=message):
        parse_public_key(text)


def test_parse_public_key_refuses_two_lines_and_mismatched_types(keys, rsa_key):
    with pytest.raises(SessionError, match="one line"):
        parse_public_key(openssh(keys[0]) + "\n" + openssh(keys[1]))
    with pytest.raises(SessionError, match="does not decode"):
        parse_public_key(f"ssh-rsa {keys[0].get_base64()}")


def test_parse_public_key_refuses_short_rsa():
    small = paramiko.RSAKey.generate(1024)
    with pytest.raises(SessionError, match="at least 2048"):
        parse_public_key(openssh(small))


@pytest.mark.parametrize("name", [
    "boruta-user", "_svc", "a", "u0-_", "a" * 32, "tester",
])
def test_posix_user_names_are_accepted(name):
    assert is_user_name(name) and check_username(name) == name


@pytest.mark.parametrize("name", [
    "", "Root", "0day", "-rf", "a" * 33, "boruta user", "../etc", "us\u00e9r", "root;rm",
    "user\n", "user$", None, 7, b"user",
])
def test_other_user_names_are_refused(name):
    assert not is_user_name(name)
    with pytest.raises(SessionError, match="^invalid user name "):
        check_username(name)


def test_a_refused_user_name_is_told_with_the_rule():
    with pytest.raises(SessionError) as info:
        check_username("Root")
    assert info.value.to_dict() == {
        "code": "session_failed",
        "message": "invalid user name 'Root': lower case letters, digits, '_' or '-', "
                   "starting with a letter or '_', at most 32 characters"}
    with pytest.raises(SessionError) as info:
        check_username("x" * 1000)                   # quoted, but not at any length
    assert info.value.message == f"invalid user name '{'x' * 59}: {USER_NAME_RULE}"


def test_session_errors_have_their_code_and_exact_message(keys, tmp_path):
    """What the server is told when a session cannot be made: one code, a message
    that says what was wrong."""
    def failure(call) -> dict[str, str]:
        with pytest.raises(SessionError) as info:
            call()
        return info.value.to_dict()

    stopped = EmbeddedSSHServer(workdir_base=str(tmp_path / "w"))
    assert failure(lambda: parse_public_key("")) == {
        "code": "session_failed", "message": "empty public key"}
    assert failure(lambda: parse_public_key("ssh-ed25519")) == {
        "code": "session_failed", "message": "public key must be 'TYPE BASE64 [COMMENT]'"}
    assert failure(lambda: stopped.set_job_key(USER, openssh(keys[0]))) == {
        "code": "session_failed", "message": "embedded SSH server is not running"}
    assert failure(lambda: EmbeddedSSHServer(host_key_type="dsa").start()) == {
        "code": "session_failed", "message": "unknown host key type 'dsa'; ed25519 or rsa"}


# --- embedded server: the job's key and nothing else ----------------------------------


def test_backends_follow_the_protocol():
    assert isinstance(EmbeddedSSHServer(), SessionBackend)
    assert isinstance(SystemSessionBackend(), SessionBackend)


def test_address_has_the_bound_port(server):
    host, port = server.address()
    assert host == "127.0.0.1" and port > 0 and port == server.port


def test_exec_in_the_jobs_working_directory(server, keys):
    assert server.set_job_key(USER, openssh(keys[0])) == USER
    workdir = server.workdir
    assert os.path.isdir(workdir) and os.listdir(workdir) == []
    assert os.path.dirname(workdir) == os.path.realpath(server._workdir_base)
    with connect(server, keys[0]) as c:
        out, err, status = run(c, "echo hello; pwd")
        assert (out, err, status) == (f"hello\n{workdir}\n", "", 0)
        out, err, status = run(c, "echo to-err >&2; echo $HOME $USER; exit 7")
        assert (out, err, status) == (f"{workdir} {USER}\n", "to-err\n", 7)
        out, _, status = run(c, "tr a-z A-Z", stdin=b"piped input\n")
        assert (out, status) == ("PIPED INPUT\n", 0)
        out, _, status = run(c, "kill -9 $$")
        assert status == 128 + 9


def test_large_output_streams_whole(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    with connect(server, keys[0]) as c:
        out, _, status = run(c, "head -c 3000000 /dev/zero | tr '\\0' x")
        assert status == 0 and len(out) == 3_000_000 and set(out) == {"x"}


def test_other_key_wrong_user_and_no_key_are_refused(server, keys, rsa_key):
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, keys[0])  # no job yet
    server.set_job_key(USER, openssh(keys[0]))
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, keys[1])
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, rsa_key)
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, keys[0], user="root")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with client, pytest.raises(paramiko.AuthenticationException):
        client.connect("127.0.0.1", server.port, username=USER, password="guess",
                       look_for_keys=False, allow_agent=False, timeout=5)


def test_rsa_job_key_works(server, rsa_key):
    server.set_job_key("tester", openssh(rsa_key))
    with connect(server, rsa_key, user="tester") as c:
        assert run(c, "echo ok")[0] == "ok\n"


def test_revoke_closes_sessions_and_refuses_the_old_key(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    old_workdir = server.workdir
    c = connect(server, keys[0])
    Path(old_workdir, "left-over").write_text("x")
    transport = c.get_transport()
    assert wait_until(lambda: server.session_count() == 1)

    server.revoke()
    assert wait_until(lambda: not transport.is_active())
    assert not os.path.exists(old_workdir) and server.workdir is None
    assert server.session_count() == 0
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, keys[0])
    c.close()

    server.set_job_key(USER, openssh(keys[1]))
    assert server.workdir != old_workdir and os.listdir(server.workdir) == []
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, keys[0])
    with connect(server, keys[1]) as c2:
        assert run(c2, "ls -A")[0] == ""  # a fresh, empty working directory
    server.revoke()  # the second job's key goes too
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, keys[1])


def test_new_job_kills_the_old_jobs_processes(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    c = connect(server, keys[0])
    chan = c.get_transport().open_session()
    chan.exec_command("echo started; exec sleep 60")
    read_until(chan, b"started")
    pids = [p.pid for p in server._job.procs]
    assert len(pids) == 1
    server.set_job_key(USER, openssh(keys[1]))  # replaces: revokes the old job
    assert wait_until(lambda: chan.closed or chan.eof_received)
    for pid in pids:
        assert wait_until(lambda: not _alive(pid))
    c.close()


def test_client_hang_up_ends_commands_and_revoke_ends_the_stubborn(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    c = connect(server, keys[0])
    polite = c.get_transport().open_session()
    polite.exec_command("echo started; exec sleep 60")
    stubborn = c.get_transport().open_session()
    stubborn.exec_command("trap '' HUP; echo started; exec sleep 60")  # ignores SIGHUP
    read_until(polite, b"started")
    read_until(stubborn, b"started")
    assert wait_until(lambda: len(server._job.procs) == 2)
    pids = {p.pid for p in server._job.procs}
    c.close()  # the client goes away: SIGHUP, as sshd does
    assert wait_until(lambda: sum(_alive(pid) for pid in pids) == 1)
    assert wait_until(lambda: len(server._job.procs) == 1)  # the survivor is tracked...
    server.revoke()  # ...so revoking the job kills it
    assert wait_until(lambda: not any(_alive(pid) for pid in pids))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):   # gone, or reaped between open and read
        return False


def test_shell_with_a_pty_echoes(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    with connect(server, keys[0]) as c:
        chan = c.invoke_shell(term="xterm", width=100, height=30)
        chan.send(b"stty size; echo marker-$((40+2))\n")
        out = read_until(chan, b"marker-42\r\n")
        assert b"30 100" in out  # the window size reached the pty
        assert b"echo marker-$((40+2))" in out  # the terminal echoed our typing
        chan.resize_pty(width=120, height=40)
        chan.send(b"stty size\n")
        read_until(chan, b"40 120")
        chan.send(b"tty; exit 3\n")
        out = read_until(chan, b"/dev/pts/")
        assert chan.recv_exit_status() == 3


def test_shell_without_a_pty(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    with connect(server, keys[0]) as c:
        chan = c.get_transport().open_session()
        chan.invoke_shell()
        chan.sendall(b"echo no-pty; pwd; exit 4\n")
        out = read_until(chan, server.workdir.encode())
        assert b"no-pty\n" in out
        assert chan.recv_exit_status() == 4


def test_exec_with_a_pty(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    with connect(server, keys[0]) as c:
        chan = c.get_transport().open_session()
        chan.get_pty()
        chan.exec_command("test -t 0 && echo is-a-tty")
        read_until(chan, b"is-a-tty")
        assert chan.recv_exit_status() == 0


def test_sftp_round_trip_and_escapes(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    workdir = server.workdir
    with connect(server, keys[0]) as c, c.open_sftp() as sftp:
        assert sftp.normalize(".") == "/"
        with sftp.open("hello.txt", "w") as f:
            f.write(b"over sftp\n")
        assert Path(workdir, "hello.txt").read_bytes() == b"over sftp\n"
        with sftp.open("/hello.txt") as f:
            assert f.read() == b"over sftp\n"
        sftp.mkdir("sub")
        sftp.put(os.path.join(workdir, "hello.txt"), "sub/copy.txt")
        assert sorted(sftp.listdir(".")) == ["hello.txt", "sub"]
        assert sftp.listdir("/sub") == ["copy.txt"]
        assert sftp.stat("sub/copy.txt").st_size == 10
        sftp.rename("sub/copy.txt", "sub/moved.txt")
        sftp.chdir("sub")
        assert sftp.normalize("..") == "/"
        with sftp.open("moved.txt") as f:
            assert f.read() == b"over sftp\n"
        sftp.remove("moved.txt")
        sftp.chdir("/")
        sftp.rmdir("sub")
        # Leaving the working directory is refused, not clamped.
        for bad in ("../escape.txt", "/../escape.txt", "sub/../../escape.txt"):
            with pytest.raises(PermissionError):
                sftp.open(bad, "w")
        with pytest.raises(PermissionError):
            sftp.stat("../../../../etc/passwd")
        with pytest.raises(PermissionError):
            sftp.listdir("..")
        with pytest.raises(IOError):
            sftp.normalize("..")
        assert not os.path.exists(os.path.join(os.path.dirname(workdir), "escape.txt"))
        # A symbolic link made from the shell does not lead SFTP out either.
        run(c, "ln -s /etc etc-link; ln -s hello.txt inside-link")
        with pytest.raises(PermissionError):
            sftp.listdir("etc-link")
        with pytest.raises(PermissionError):
            sftp.open("etc-link/passwd")
        with sftp.open("inside-link") as f:
            assert f.read() == b"over sftp\n"
        assert stat.S_ISLNK(sftp.lstat("etc-link").st_mode)
        with pytest.raises(PermissionError):
            sftp.symlink("/../etc/passwd", "new-link")


def test_port_forwarding_is_refused(server, keys):
    server.set_job_key(USER, openssh(keys[0]))
    with connect(server, keys[0]) as c:
        with pytest.raises(paramiko.ChannelException):
            c.get_transport().open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))


def test_host_key_is_kept_in_its_file(tmp_path, keys):
    path = str(tmp_path / "host_key")
    first = EmbeddedSSHServer(host_key_path=path)
    first.start()
    fingerprint = first.host_key.fingerprint
    first.stop()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = EmbeddedSSHServer(host_key_path=path, workdir_base=str(tmp_path / "w"))
    second.start()
    try:
        assert second.host_key.fingerprint == fingerprint
        second.set_job_key(USER, openssh(keys[0]))
        with connect(second, keys[0]) as c:
            assert run(c, "echo pinned")[0] == "pinned\n"
    finally:
        second.stop()


def test_rsa_host_key(keys):
    s = EmbeddedSSHServer(host_key_type="rsa")
    s.start()
    try:
        assert s.host_key.get_name() == "ssh-rsa"
        s.set_job_key(USER, openssh(keys[0]))
        with connect(s, keys[0]) as c:
            assert run(c, "echo rsa-host")[0] == "rsa-host\n"
    finally:
        s.stop()


def test_lifecycle_errors_and_stop(tmp_path, keys):
    s = EmbeddedSSHServer(workdir_base=str(tmp_path / "w"))
    with pytest.raises(SessionError, match="not running"):
        s.set_job_key(USER, openssh(keys[0]))
    s.start()
    with pytest.raises(SessionError, match="already"):
        s.start()
    with pytest.raises(SessionError, match="invalid user name"):
        s.set_job_key("Root; rm", openssh(keys[0]))
    with pytest.raises(SessionError):
        s.set_job_key(USER, "ssh-ed25519 garbage")
    assert s.workdir is None  # a bad key changed nothing
    s.set_job_key(USER, openssh(keys[0]))
    workdir = s.workdir
    c = connect(s, keys[0])
    port = s.port
    s.stop()
    s.stop()  # idempotent
    assert wait_until(lambda: not c.get_transport().is_active())
    assert not os.path.exists(workdir)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    c.close()


def test_listen_failure_is_a_session_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        s = EmbeddedSSHServer("127.0.0.1", taken.getsockname()[1])
        with pytest.raises(SessionError, match="cannot listen"):
            s.start()


def test_private_workdir_base_is_removed_at_stop(keys):
    s = EmbeddedSSHServer()
    s.start()
    s.set_job_key(USER, openssh(keys[0]))
    base = os.path.dirname(s.workdir)
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    s.stop()
    assert not os.path.exists(base)


# --- system backend -------------------------------------------------------------------


def test_command_error_tables():
    assert command_error("useradd", 12, "x") == "command failed: can't create home directory"
    assert command_error("useradd", 9, "") == "command failed: username already in use"
    assert command_error("userdel", 8, "") == "command failed: user currently logged in"
    assert command_error("userdel", 6, "") == "command failed: specified user doesn't exist"
    assert command_error("userdel", 42, " oops \n") == "command failed: exit status 42, oops"


class _Runner:
    """A fake subprocess.run for useradd/userdel."""

    def __init__(self, codes: dict[str, int]) -> None:
        self.codes = codes
        self.argvs: list[list[str]] = []

    def __call__(self, argv, **kw):
        self.argvs.append(argv)
        tool = os.path.basename(argv[0])
        return subprocess.CompletedProcess(argv, self.codes.get(tool, 0), stdout="said something")


def test_system_backend_wraps_useradd_errors(keys):
    name = f"boruta-test-{secrets.token_hex(4)}"  # does not exist: no userdel
    runner = _Runner({"useradd": 12})
    backend = SystemSessionBackend(["disk", "dialout"], runner=runner)
    with pytest.raises(SessionError, match="^user creation failed: command failed: "
                                           "can't create home directory$"):
        backend.set_job_key(name, openssh(keys[0]))
    assert runner.argvs == [[runner.argvs[0][0], "-p", "*", "-m", "-G", "disk,dialout", name]]
    assert runner.argvs[0][0].endswith("useradd")


def test_system_backend_checks_the_key_before_touching_anything(keys):
    runner = _Runner({})
    backend = SystemSessionBackend(runner=runner)
    with pytest.raises(SessionError, match="empty public key"):
        backend.set_job_key("boruta-x", "")
    with pytest.raises(SessionError, match="invalid user name"):
        backend.set_job_key("../etc", openssh(keys[0]))
    assert runner.argvs == []


def test_system_backend_refuses_to_delete_system_accounts(keys):
    runner = _Runner({})
    backend = SystemSessionBackend(runner=runner)
    with pytest.raises(SessionError, match="refusing to delete a system account"):
        backend.set_job_key("root", openssh(keys[0]))
    assert runner.argvs == []


@pytest.mark.system
@pytest.mark.skipif(os.geteuid() != 0, reason="creates a real local user: needs root")
def test_system_backend_recreates_a_real_user(keys):
    name = f"boruta-test-{secrets.token_hex(4)}"
    backend = SystemSessionBackend(address=("", 22))
    try:
        backend.start()
        assert backend.set_job_key(name, openssh(keys[0])) == name
        pw = pwd.getpwnam(name)
        ssh_dir = os.path.join(pw.pw_dir, ".ssh")
        auth = os.path.join(ssh_dir, "authorized_keys")
        assert stat.S_IMODE(os.stat(ssh_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(auth).st_mode) == 0o600
        for path in (ssh_dir, auth):
            assert (os.stat(path).st_uid, os.stat(path).st_gid) == (pw.pw_uid, pw.pw_gid)
        assert Path(auth).read_text() == f"ssh-ed25519 {keys[0].get_base64()} boruta-job\n"
        with open("/etc/shadow") as f:  # password locked with '*'
            assert any(line.startswith(f"{name}:*:") for line in f)
        marker = os.path.join(pw.pw_dir, "from-the-first-job")
        Path(marker).touch()

        backend.set_job_key(name, openssh(keys[1]))  # recreated: fresh home, new key
        assert not os.path.exists(marker)
        assert Path(auth).read_text() == f"ssh-ed25519 {keys[1].get_base64()} boruta-job\n"

        backend.revoke()
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
        assert not os.path.exists(pw.pw_dir)
        assert backend.address() == ("", 22)
    finally:
        subprocess.run(["userdel", "-r", "-f", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


@pytest.mark.system
@pytest.mark.skipif(os.geteuid() != 0, reason="creates a real local user: needs root")
def test_system_backend_start_removes_a_left_over_user(keys):
    name = f"boruta-test-{secrets.token_hex(4)}"
    try:
        SystemSessionBackend().set_job_key(name, openssh(keys[0]))  # a crashed dryad's job
        pwd.getpwnam(name)
        SystemSessionBackend(user=name).start()
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-r", "-f", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
