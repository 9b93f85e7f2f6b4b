"""SimulatedBoard: state, the call record, fault injection, argument checks."""
from __future__ import annotations

import inspect
import threading
import time

import pytest

from boruta.dryad.board import (
    BOARD_OPERATIONS,
    OLED_TEXT_MAX,
    Board,
    BoardError,
    SimulatedBoard,
    oled_safe_text,
)
from boruta.dryad.stm import StmBoard


def _parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


def test_board_operations_are_the_protocols_methods():
    protocol_methods = {name for name, value in vars(Board).items()
                        if inspect.isfunction(value) and not name.startswith("_")}
    assert set(BOARD_OPERATIONS) == protocol_methods - {"close"}
    assert len(BOARD_OPERATIONS) == len(set(BOARD_OPERATIONS))


@pytest.mark.parametrize("backend", [SimulatedBoard, StmBoard])
@pytest.mark.parametrize("op", [*BOARD_OPERATIONS, "close"])
def test_every_backend_has_every_operation_with_the_protocols_parameters(backend, op):
    """The operations layer calls any board alike: same names, same parameters."""
    assert _parameters(getattr(backend, op)) == _parameters(getattr(Board, op))


def test_a_board_error_says_the_operation_the_command_and_the_reply():
    bare = BoardError("set_led", "LED stuck")
    assert bare.to_dict() == {"code": "board_failed", "message": "set_led: LED stuck"}
    silent = BoardError("read_current", "timed out", command="current")
    assert silent.message == "read_current: timed out (command 'current', no reply)"
    answered = BoardError("oled_text", "refused", command="text 0 0 on hi",
                          reply=["Error processing command"])
    assert answered.message == ("oled_text: refused (command 'text 0 0 on hi', "
                                "reply ['Error processing command'])")
    assert (answered.op, answered.problem, answered.reply) == (
        "oled_text", "refused", ["Error processing command"])


def test_state_follows_the_calls():
    b = SimulatedBoard(current=0.4)
    assert (b.power, b.sdmux) == (False, "ts")
    assert b.read_current() == 0.0  # unpowered DUT draws nothing
    b.dut_power_on()
    assert b.power and b.read_current() == pytest.approx(0.4)
    b.dut_power_off()
    assert not b.power
    b.sdmux_to_dut()  # like the STM's `dut`: card and power to the DUT
    assert (b.sdmux, b.power) == ("dut", True)
    b.sdmux_to_ts()  # `ts`: card to the test server, DUT power cut
    assert (b.sdmux, b.power) == ("ts", False)
    b.power_tick(0.5)
    assert b.power  # a tick ends with the power on
    b.set_led(2, 96, 144, 0)
    assert b.leds == {1: (0, 0, 0), 2: (96, 144, 0)}
    b.oled_text(0, 0, "maintenance")
    b.oled_text(0, 10, "second")
    assert b.oled == [(0, 0, "maintenance"), (0, 10, "second")]
    b.oled_clear()
    assert b.oled == []


def test_every_call_is_recorded_with_a_timestamp_in_order():
    b = SimulatedBoard()
    before = time.monotonic()
    b.set_led(1, 1, 2, 3)
    b.oled_text(3, 4, "hi")
    b.power_tick(1)
    after = time.monotonic()
    assert [(c.op, c.args, c.error) for c in b.calls] == [
        ("set_led", (1, 1, 2, 3), None),
        ("oled_text", (3, 4, "hi"), None),
        ("power_tick", (1.0,), None),
    ]
    times = [c.time for c in b.calls]
    assert before <= times[0] <= times[1] <= times[2] <= after
    assert [c.op for c in b.calls_of("oled_text")] == ["oled_text"]


def test_fail_next_fails_once_and_leaves_state_alone():
    b = SimulatedBoard()
    b.fail_next("set_led")
    with pytest.raises(BoardError, match="set_led: injected fault"):
        b.set_led(1, 9, 9, 9)
    assert b.leds[1] == (0, 0, 0)
    b.set_led(1, 9, 9, 9)  # only the next call failed
    assert b.leds[1] == (9, 9, 9)
    failed, ok = b.calls_of("set_led")
    assert isinstance(failed.error, BoardError) and ok.error is None


def test_fail_next_queues_errors_and_takes_custom_ones():
    b = SimulatedBoard()
    b.fail_next("read_current", BoardError("read_current", "ADC stuck"))
    b.fail_next("read_current", OSError("serial gone"))
    with pytest.raises(BoardError, match="ADC stuck"):
        b.read_current()
    with pytest.raises(OSError, match="serial gone"):
        b.read_current()
    assert b.read_current() == 0.0


def test_fail_always_until_cleared():
    b = SimulatedBoard()
    b.fail_always("oled_clear")
    for _ in range(3):
        with pytest.raises(BoardError):
            b.oled_clear()
    b.dut_power_on()  # other operations unaffected
    b.clear_faults("oled_clear")
    b.oled_clear()
    b.fail_always("dut_power_off")
    b.fail_next("dut_power_on")
    b.clear_faults()
    b.dut_power_off()
    b.dut_power_on()
    assert [c.error is None for c in b.calls_of("oled_clear")] == [False] * 3 + [True]


def test_fault_injection_refuses_unknown_operations():
    b = SimulatedBoard()
    with pytest.raises(ValueError, match="unknown board operation"):
        b.fail_next("self_destruct")
    with pytest.raises(ValueError, match="unknown board operation"):
        b.fail_always("led")


def test_closed_board_fails():
    b = SimulatedBoard()
    b.close()
    with pytest.raises(BoardError, match="closed"):
        b.dut_power_on()


@pytest.mark.parametrize("call, message", [
    (lambda b: b.set_led(3, 0, 0, 0), "LED number"),
    (lambda b: b.set_led(0, 0, 0, 0), "LED number"),
    (lambda b: b.set_led(1, 256, 0, 0), "red"),
    (lambda b: b.set_led(1, 0, -1, 0), "green"),
    (lambda b: b.set_led(1, 0, 0, 1.5), "blue"),
    (lambda b: b.set_led(True, 0, 0, 0), "LED number"),
    (lambda b: b.oled_text(-1, 0, "x"), "x must be"),
    (lambda b: b.oled_text(0, "1", "x"), "y must be"),
    (lambda b: b.oled_text(0, 0, ""), "empty"),
    (lambda b: b.oled_text(0, 0, "\n\t "), "empty"),
    (lambda b: b.oled_text(0, 0, None), "string"),
    (lambda b: b.power_tick(0), "power tick"),
    (lambda b: b.power_tick(61), "power tick"),
    (lambda b: b.power_tick("1"), "power tick"),
])
def test_bad_arguments_are_value_errors_and_not_recorded(call, message):
    b = SimulatedBoard()
    with pytest.raises(ValueError, match=message):
        call(b)
    assert b.calls == []


def test_oled_text_is_what_the_display_can_show():
    assert oled_safe_text("a  b\tc") == "a b c"
    assert oled_safe_text("x" * 40) == "x" * OLED_TEXT_MAX
    assert oled_safe_text("line\nbreak") == "line break"
    assert oled_safe_text("zażółć") == "za????"
    assert oled_safe_text("bell\x07") == "bell?"
    assert oled_safe_text("  maintenance  ") == "maintenance"
    b = SimulatedBoard()
    b.oled_text(0, 0, "a very long maintenance message")
    assert b.oled == [(0, 0, "a very long main")]


def test_wait_for_wakes_on_calls_from_other_threads():
    b = SimulatedBoard()

    def worker():
        for i in range(5):
            b.set_led(1, i, 0, 0)

    t = threading.Thread(target=worker)
    t.start()
    assert b.wait_for(lambda bb: len(bb.calls_of("set_led")) >= 5, timeout=5)
    t.join()
    assert not b.wait_for(lambda bb: len(bb.calls) > 5, timeout=0.01)
