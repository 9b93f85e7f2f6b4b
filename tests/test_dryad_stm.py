"""StmBoard against a fake STM: the text protocol, transports, and failures."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from fake_stm import ERROR, UNKNOWN, FakeStm  # tests/ is on sys.path

from boruta.dryad.board import BoardError
from boruta.dryad.stm import StmBoard, tcp_address

TRANSPORTS = ["pty", "socketpair", "unix", "tcp"]


@pytest.fixture
def fake():
    with FakeStm("pty") as f:
        yield f


@pytest.fixture
def board(fake):
    b = fake.board(timeout=0.5)
    yield b
    b.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_operation_on_every_transport(transport):
    with FakeStm(transport) as fake, fake.board(timeout=1.0) as b:
        assert fake.received == ["echo off"] and fake.echo is False
        b.dut_power_on()
        b.set_led(1, 96, 144, 0)
        b.oled_clear()
        b.oled_text(0, 0, "maintenance")
        assert b.read_current() == pytest.approx(0.25)  # 250 mA
        b.power_tick(0.2)
        b.sdmux_to_ts()
        assert b.read_current() == 0.0
        b.sdmux_to_dut()
        b.dut_power_off()
        assert fake.received[1:] == [
            "power on", "led 1 96 144 0", "clr", "text 0 0 on maintenance", "current",
            "power tick 200", "ts", "current", "dut", "power off",
        ]
        assert fake.leds[1] == (96, 144, 0)
        assert fake.oled == [(0, 0, "maintenance")]
        assert fake.ticks == [200]
        assert (fake.mux, fake.power) == ("dut", False)


def test_text_is_sanitised_before_it_reaches_the_stm(fake, board):
    board.oled_text(2, 8, "two  words\nand a very long tail")
    assert fake.received[-1] == "text 2 8 on two words and a"
    with pytest.raises(ValueError):
        board.oled_text(0, 0, "\r\n")
    with pytest.raises(ValueError):
        board.set_led(3, 0, 0, 0)
    assert fake.received[-1] == "text 2 8 on two words and a"


def test_crlf_answers_and_blank_lines():
    with FakeStm("socketpair", newline="\r\n") as fake, fake.board() as b:
        fake.answer_next("clr", ["", "OK"])
        b.oled_clear()
        assert b.read_current() == 0.0


def test_echo_of_the_command_is_skipped(fake, board):
    fake.answer_next("clr", ["clr", "OK"])  # an STM that still echoes
    board.oled_clear()
    board.set_led(2, 1, 2, 3)
    assert fake.leds[2] == (1, 2, 3)


@pytest.mark.parametrize("reply", [[ERROR], [UNKNOWN], ["ERR bad led"]])
def test_error_line_is_a_board_error_with_command_and_reply(fake, board, reply):
    fake.answer_next("led", reply)
    with pytest.raises(BoardError) as info:
        board.set_led(1, 0, 0, 0)
    err = info.value
    assert err.op == "set_led" and err.command == "led 1 0 0 0" and err.reply == reply
    assert "led 1 0 0 0" in str(err) and reply[0] in str(err)
    board.set_led(1, 5, 5, 5)  # the link is usable afterwards
    assert fake.leds[1] == (5, 5, 5)


def test_garbage_answer_then_back_in_step(fake, board):
    fake.answer_next("clr", ["BANANA", "OK"])
    with pytest.raises(BoardError, match="unexpected answer") as info:
        board.oled_clear()
    assert info.value.reply == ["BANANA"] and info.value.command == "clr"
    # The stale OK is skipped by the resynchronisation before the next command.
    board.dut_power_on()
    assert fake.received[-2:] == ["echo off", "power on"] and fake.power


@pytest.mark.parametrize("value", ["abc", "", "nan", "12 mA"])
def test_current_must_be_a_number(fake, board, value):
    fake.answer_next("current", [value, "OK"] if value else ["OK"])
    with pytest.raises(BoardError) as info:
        board.read_current()
    assert info.value.command == "current"
    board.dut_power_on()
    assert board.read_current() == pytest.approx(0.25)


def test_timeout_names_the_command_and_the_next_command_works(fake):
    with fake.board(timeout=0.2) as b:
        fake.answer_next("clr", None)  # silence
        start = time.monotonic()
        with pytest.raises(BoardError, match="timed out") as info:
            b.oled_clear()
        assert 0.15 < time.monotonic() - start < 2
        assert info.value.command == "clr" and info.value.reply is None
        b.set_led(2, 7, 7, 7)
        assert fake.leds[2] == (7, 7, 7)


def test_late_answer_is_not_taken_for_the_next_commands(fake):
    with fake.board(timeout=0.2) as b:
        # The answer to `current` arrives after the timeout, while the next
        # command is already waiting: it must not be read as that one's answer.
        fake.answer_next("current", ["999", "OK"], delay=0.3)
        with pytest.raises(BoardError, match="timed out"):
            b.read_current()
        b.dut_power_on()
        assert b.read_current() == pytest.approx(0.25)
        assert fake.received[-4:] == ["current", "echo off", "power on", "current"]


def test_partial_answer_is_reported_on_timeout(fake):
    with fake.board(timeout=0.2) as b:
        fake.answer_next("clr", b"O")  # no end of line
        with pytest.raises(BoardError, match="timed out") as info:
            b.oled_clear()
        assert info.value.reply == ["O"]


def test_power_tick_waits_for_the_tick_itself(fake):
    with fake.board(timeout=0.2) as b:
        fake.answer_next("power tick", ["OK"], delay=0.35)  # longer than the timeout
        b.power_tick(0.3)  # allowed timeout + 0.3 s
        assert fake.received[-1] == "power tick 300"


@pytest.mark.parametrize("noise", [b"x" * 5000, b"y" * 300 + b"\nOK\n"])
def test_overlong_line_is_garbage(fake, board, noise):
    fake.answer_next("clr", noise)
    with pytest.raises(BoardError, match="too long") as info:
        board.oled_clear()
    assert len(str(info.value)) < 300  # the error does not carry the noise
    board.oled_clear()


def test_stm_hanging_up_is_a_board_error():
    with FakeStm("socketpair") as fake, fake.board() as b:
        fake.hang_up()
        with pytest.raises(BoardError, match="closed the link|cannot"):
            b.oled_clear()


def test_closed_board_refuses_commands(fake):
    b = fake.board()
    b.close()
    b.close()  # idempotent
    with pytest.raises(BoardError, match="closed"):
        b.oled_clear()


def test_open_fails_cleanly(tmp_path):
    with pytest.raises(BoardError, match="cannot open STM"):
        StmBoard(str(tmp_path / "no-such-tty"))
    with pytest.raises(BoardError, match="cannot open STM"):
        StmBoard(f"unix:{tmp_path / 'no-such-socket'}")
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(BoardError, match="cannot open STM"):
        StmBoard(f"tcp://127.0.0.1:{port}", timeout=1)
    with pytest.raises(ValueError):
        StmBoard("/dev/null", timeout=0)


@pytest.mark.parametrize("path, problem", [
    ("tcp://127.0.0.1:\u00b2", "bad port '\u00b2': use 1..65535"),
    ("tcp://127.0.0.1:99999", "port 99999 out of range 1..65535"),
    ("tcp://127.0.0.1", "'127.0.0.1' is not HOST:PORT"),
    ("tcp://:2000", "':2000' has no host"),
    ("tcp://::1:2000", "write an IPv6 address in brackets: [::1]:2000"),
])
def test_a_tcp_path_that_is_no_address_is_a_board_error(path, problem):
    with pytest.raises(BoardError) as info:
        StmBoard(path, timeout=1)
    assert info.value.message == f"open: cannot open STM at {path!r}: {problem}"


def test_tcp_address_of_an_stm_path():
    assert tcp_address("tcp://[::1]:2000") == ("::1", 2000)
    assert tcp_address("tcp://stm.lab:7") == ("stm.lab", 7)
    assert tcp_address("/dev/ttyS2") is None and tcp_address("unix:/run/stm") is None


def test_silent_stm_at_open():
    with FakeStm("socketpair") as fake:
        fake.answer_always("echo", None)
        with pytest.raises(BoardError, match="open: timed out"):
            fake.board(timeout=0.2)


def test_wrong_device_answering_garbage_at_open():
    with FakeStm("pty") as fake:
        fake.answer_always("echo", ["AT+OK?"])
        with pytest.raises(BoardError):
            fake.board(timeout=0.2)


def test_one_command_at_a_time_across_threads(fake, board):
    errors = []

    def worker(n):
        try:
            for i in range(10):
                board.set_led(n, i, i, i)
                board.read_current()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2, 1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert errors == []
    assert len(fake.received) == 1 + 4 * 20
    assert all(line.startswith(("led ", "current", "echo off")) for line in fake.received)


def test_pty_path_is_opened_raw():
    with FakeStm("pty") as fake:
        assert os.path.exists(fake.path)
        with StmBoard(fake.path, timeout=0.5) as b:
            b.oled_text(0, 0, "x")  # no line-discipline echo confuses the protocol
        assert fake.received == ["echo off", "text 0 0 on x"]


def test_resync_skips_noise_before_its_marker(fake):
    with fake.board(timeout=0.3) as b:
        fake.answer_next("clr", None)
        with pytest.raises(BoardError):
            b.oled_clear()
        # The resynchronising `echo off` is answered after a burst of noise.
        fake.answer_next("echo", b"z" * 1000 + b"\nstale\nEcho is off now.\nOK\n")
        b.dut_power_on()
        assert fake.power
