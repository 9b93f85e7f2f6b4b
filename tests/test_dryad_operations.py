"""DryadOperations: maintenance blinker, prepare, healthcheck."""
from __future__ import annotations

import asyncio
import io
import math

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fake_stm import FakeStm  # tests/ is on sys.path

from boruta.dryad.board import BoardError, SimulatedBoard
from boruta.dryad.operations import OFF, YELLOW, DryadOperations, HealthcheckFailed
from boruta.dryad.embedded_ssh import EmbeddedSSHServer
from boruta.dryad.session import SessionError

PERIOD = 0.01  # blink period for tests
BLINKER = "dryad-maintenance-blinker"


def new_key() -> paramiko.PKey:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()
    return paramiko.Ed25519Key(file_obj=io.StringIO(pem))


@pytest.fixture(scope="module")
def pubkey() -> str:
    k = new_key()
    return f"{k.get_name()} {k.get_base64()} boruta-job"


class FakeSession:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail: Exception | None = None
        self.reported_user: str | None = None    # what set_job_key answers (None: the user)

    def start(self) -> None:
        self.calls.append(("start",))

    def set_job_key(self, user: str, key: str) -> str:
        self.calls.append(("set_job_key", user, key))
        if self.fail:
            raise self.fail
        return user if self.reported_user is None else self.reported_user

    def revoke(self) -> None:
        self.calls.append(("revoke",))

    def stop(self) -> None:
        self.calls.append(("stop",))

    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", 2222)


def blinkers() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == BLINKER and not t.done()]


async def wait_calls(board: SimulatedBoard, op: str, count: int, timeout: float = 5.0) -> None:
    ok = await asyncio.to_thread(board.wait_for, lambda b: len(b.calls_of(op)) >= count, timeout)
    assert ok, f"fewer than {count} {op} calls: {board.calls_of(op)}"


def make(board=None, session=None, **kw) -> tuple[DryadOperations, SimulatedBoard, FakeSession]:
    board = board or SimulatedBoard()
    session = session or FakeSession()
    kw.setdefault("blink_period", PERIOD)
    return DryadOperations(board, session, "boruta-user", **kw), board, session


# --- maintenance -----------------------------------------------------------------------


def test_maintenance_shows_the_message_and_blinks():
    async def main():
        ops, board, session = make()
        await ops.put_in_maintenance("maintenance")
        assert ops.blinking and len(blinkers()) == 1
        assert [c.op for c in board.calls[:2]] == ["oled_clear", "oled_text"]
        assert board.oled == [(0, 0, "maintenance")]
        assert session.calls == [("revoke",)]  # nobody keeps access to the worker
        await wait_calls(board, "set_led", 8)
        leds = [c.args for c in board.calls_of("set_led")][:8]
        cycle = [(1, *YELLOW), (1, *OFF), (2, *YELLOW), (2, *OFF)]
        assert leds == cycle * 2
        await ops.close()
        assert not ops.blinking and blinkers() == []
    asyncio.run(main())


def test_second_maintenance_replaces_the_blinker():
    async def main():
        ops, board, _ = make()
        await ops.put_in_maintenance("first")
        first = blinkers()
        await wait_calls(board, "set_led", 2)
        await ops.put_in_maintenance("second")
        assert len(blinkers()) == 1 and blinkers() != first
        assert first[0].cancelled()
        # The first blinker's clean-up (LEDs off, OLED cleared) ran before the
        # second message was printed, so the message stays on the display.
        assert board.oled == [(0, 0, "second")]
        ops_after = [c.op for c in board.calls]
        texts = [i for i, op in enumerate(ops_after) if op == "oled_text"]
        assert ops_after[texts[1] - 1] == "oled_clear"
        n = len(board.calls_of("set_led"))
        await wait_calls(board, "set_led", n + 4)  # the new one blinks
        await ops.close()
    asyncio.run(main())


def test_many_maintenance_calls_leave_exactly_one_blinker():
    async def main():
        ops, board, _ = make()
        await asyncio.gather(*(ops.put_in_maintenance(f"m{i}") for i in range(5)))
        assert len(blinkers()) == 1
        assert board.oled == [(0, 0, "m4")]
        await ops.close()
        assert blinkers() == []
    asyncio.run(main())


def test_cancelled_blinker_leaves_leds_off_and_display_clear():
    async def main():
        ops, board, _ = make()
        await ops.put_in_maintenance("maintenance")
        await wait_calls(board, "set_led", 1)
        await ops.stop_blinking()
        assert not ops.blinking
        assert board.leds == {1: OFF, 2: OFF} and board.oled == []
        assert board.calls[-1].op == "oled_clear"
        await ops.close()
    asyncio.run(main())


def test_display_failure_is_raised_and_starts_no_blinker():
    async def main():
        ops, board, _ = make()
        board.fail_next("oled_text", BoardError("oled_text", "display dead"))
        with pytest.raises(BoardError, match="display dead"):
            await ops.put_in_maintenance("maintenance")
        assert not ops.blinking and blinkers() == []
        await ops.close()
    asyncio.run(main())


def test_led_failures_do_not_stop_the_blinker():
    async def main():
        ops, board, _ = make()
        board.fail_always("set_led")
        await ops.put_in_maintenance("maintenance")
        await wait_calls(board, "set_led", 6)
        assert ops.blinking
        assert all(c.error is not None for c in board.calls_of("set_led"))
        await ops.close()
        assert board.calls[-1].op == "oled_clear"  # clean-up still clears the display
    asyncio.run(main())


def test_empty_message_just_clears():
    async def main():
        ops, board, _ = make()
        await ops.put_in_maintenance("")
        assert [c.op for c in board.calls][:1] == ["oled_clear"]
        assert board.calls_of("oled_text") == []
        await ops.close()
    asyncio.run(main())


def test_maintenance_can_keep_the_session():
    async def main():
        ops, _, session = make(maintenance_revokes_session=False)
        await ops.put_in_maintenance("maintenance")
        assert session.calls == []
        await ops.close()
    asyncio.run(main())


# --- prepare ---------------------------------------------------------------------------


def test_prepare_stops_blinking_and_installs_the_key(pubkey):
    async def main():
        ops, board, session = make()
        await ops.put_in_maintenance("maintenance")
        await wait_calls(board, "set_led", 3)
        assert await ops.prepare(pubkey) == "boruta-user"
        assert not ops.blinking and blinkers() == []
        assert session.calls[-1] == ("set_job_key", "boruta-user", pubkey)
        assert board.leds == {1: OFF, 2: OFF} and board.oled == []
        seen = len(board.calls)
        await asyncio.sleep(PERIOD * 5)  # several periods: nothing blinks any more
        assert len(board.calls) == seen
        await ops.close()
    asyncio.run(main())


def test_prepare_with_a_bad_key_changes_nothing():
    async def main():
        ops, board, session = make()
        await ops.put_in_maintenance("maintenance")
        session.calls.clear()
        for bad in ("", "ssh-ed25519 AAAA", "not a key"):
            with pytest.raises(SessionError):
                await ops.prepare(bad)
        assert session.calls == [] and ops.blinking
        await ops.close()
    asyncio.run(main())


def test_prepare_reports_backend_failures(pubkey):
    async def main():
        ops, _, session = make()
        session.fail = SessionError("user creation failed: command failed: x")
        with pytest.raises(SessionError, match="user creation failed"):
            await ops.prepare(pubkey)
        await ops.close()
    asyncio.run(main())


@pytest.mark.parametrize("reported", ["Root", "-rf", "boruta user", "a" * 33, ""])
def test_prepare_refuses_to_report_a_user_name_that_is_not_posix(pubkey, reported):
    """A backend that answers a bad user name: the dryad revokes what it made and
    tells the server it failed, rather than sending the name on to the job's owner."""
    async def main():
        ops, _, session = make()
        session.reported_user = reported
        with pytest.raises(SessionError) as info:
            await ops.prepare(pubkey)
        assert info.value.message.startswith(f"invalid user name {reported!r}"[:60])
        assert session.calls == [("set_job_key", "boruta-user", pubkey), ("revoke",)]
        await ops.close()
    asyncio.run(main())


def test_maintenance_and_prepare_racing_end_consistently(pubkey):
    async def main():
        ops, _, session = make()
        await asyncio.gather(ops.put_in_maintenance("maintenance"), ops.prepare(pubkey))
        # Serialised in call order: maintenance, then prepare stopped its blinker.
        assert not ops.blinking and blinkers() == []
        assert [c[0] for c in session.calls] == ["revoke", "set_job_key"]
        await ops.close()
    asyncio.run(main())


def test_prepare_with_the_embedded_server_gives_ssh_access(tmp_path):
    key = new_key()

    async def main():
        server = EmbeddedSSHServer(workdir_base=str(tmp_path))
        server.start()
        ops, _, _ = make(session=server)
        try:
            await ops.put_in_maintenance("maintenance")
            user = await ops.prepare(f"{key.get_name()} {key.get_base64()}")
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            host, port = server.address()
            await asyncio.to_thread(client.connect, host, port, username=user, pkey=key,
                                    look_for_keys=False, allow_agent=False, timeout=5)
            with client:
                _, out, _ = client.exec_command("echo $USER")
                assert (await asyncio.to_thread(out.read)) == b"boruta-user\n"
            await ops.put_in_maintenance("maintenance")  # revokes the job's key
            with pytest.raises(paramiko.AuthenticationException):
                c2 = paramiko.SSHClient()
                c2.set_missing_host_key_policy(paramiko.AutoAddPolicy())
                await asyncio.to_thread(c2.connect, host, port, username=user, pkey=key,
                                        look_for_keys=False, allow_agent=False, timeout=5)
        finally:
            await ops.close()
            server.stop()
    asyncio.run(main())


# --- healthcheck -----------------------------------------------------------------------


def test_healthy_board():
    async def main():
        ops, board, _ = make(power_tick_seconds=0.1)
        board.dut_power_on()
        assert await ops.healthcheck() == []
        assert [c.args for c in board.calls_of("power_tick")] == [(0.1,)]
        assert board.calls_of("read_current")
        await ops.require_healthy()
        await ops.close()
    asyncio.run(main())


def test_healthcheck_never_power_cycles_when_told_not_to():
    async def main():
        ops, board, _ = make(healthcheck_power_tick=False)
        for _ in range(3):
            assert await ops.healthcheck() == []
        board.fail_always("read_current")
        assert len(await ops.healthcheck()) == 1
        assert board.calls_of("power_tick") == []
        assert not any(c.op in ("dut_power_off", "sdmux_to_ts") for c in board.calls)
        await ops.close()
    asyncio.run(main())


@pytest.mark.parametrize("setup, expected", [
    (lambda b: b.fail_next("read_current"), ["cannot read the DUT current"]),
    (lambda b: b.fail_next("power_tick"), ["power tick failed"]),
    (lambda b: (b.fail_next("read_current"), b.fail_next("power_tick")),
     ["cannot read the DUT current", "power tick failed"]),
    (lambda b: (setattr(b, "current", 9.5), b.dut_power_on()), ["9.500 A is outside [0, 5] A"]),
    (lambda b: (setattr(b, "current", -1.0), b.dut_power_on()), ["is outside"]),
    (lambda b: (setattr(b, "current", math.nan), b.dut_power_on()), ["not a number"]),
])
def test_healthcheck_lists_problems(setup, expected):
    async def main():
        ops, board, _ = make()
        setup(board)
        problems = await ops.healthcheck()
        assert len(problems) == len(expected)
        for problem, text in zip(problems, expected):
            assert text in problem
        setup(board)  # again: injected faults are one-shot
        with pytest.raises(HealthcheckFailed) as info:
            await ops.require_healthy()
        assert info.value.code == "healthcheck_failed" and info.value.problems
        await ops.close()
    asyncio.run(main())


def test_operations_on_a_real_protocol_board(pubkey):
    async def main(fake):
        board = fake.board(timeout=1.0)
        ops, _, session = make(board=board, power_tick_seconds=0.05)
        try:
            await ops.put_in_maintenance("maintenance")
            await ops.prepare(pubkey)
            assert fake.oled == [] and fake.leds == {1: OFF, 2: OFF}
            fake.power = True
            assert await ops.healthcheck() == []
            assert fake.ticks == [50]
            fake.answer_next("current", ["garbage", "OK"])
            problems = await ops.healthcheck()
            assert len(problems) == 1 and "'current'" in problems[0]
        finally:
            await ops.close()
            board.close()
    with FakeStm("socketpair") as fake:
        asyncio.run(main(fake))


def test_constructor_checks():
    board, session = SimulatedBoard(), FakeSession()
    with pytest.raises(ValueError):
        DryadOperations(board, session, blink_period=0)
    with pytest.raises(ValueError):
        DryadOperations(board, session, current_range=(1.0, 1.0))
    with pytest.raises(SessionError):
        DryadOperations(board, session, user="Bad User")


def test_blinker_stopped_before_its_first_step_still_cleans_up(pubkey):
    async def main():
        ops, board, _ = make()
        await ops.put_in_maintenance("maintenance")
        await ops.prepare(pubkey)  # no await in between: the blinker never ran
        assert board.oled == [] and board.leds == {1: OFF, 2: OFF}
        assert not ops.blinking and ops._blinker_started == {}
        await ops.close()
    asyncio.run(main())
