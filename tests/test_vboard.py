"""Virtual boards (tools/vboard.py): the real bootstrap and agent on the unix
port, driven over the control channel. Waits are conditions with timeouts."""
import json
import os
import socket

import pytest

from tools.vboard import VBoard, VBoardError


def _charging(b):
    g = b.get()
    return g if g["relay"] and g["contacts"] and g["current_a"] > 0 else None


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    b = VBoard(str(tmp_path_factory.mktemp("vb") / "vb-a"), id="vb-a", wdt_ms=1500).start()
    b.wait_output("agent: vb-a", 30)
    yield b
    b.stop()


def test_boots_the_real_bootstrap_from_flash(board):
    g = board.get()
    assert g["device_id"] == "vb-a"
    assert (g["slot"], g["version"], g["trial"]) == ("a", "0.1.0", False)
    assert g["relay"] is False
    # the charging core's power-on self-test (F, then +12 V) ends within ~200 ms
    board.wait_for({"state": "A", "relay": False, "duty": 100.0}, 10)
    assert board.wait_for(lambda: board.get()["ticks"] > 10, 10)


def test_vehicle_charges_and_energy_rises(board):
    board.control("plug", state="C", max_current_a=16)
    g = board.wait_for(lambda: _charging(board), 10, what="charging")
    assert g["state"] == "C" and g["offered_a"] == 32
    assert g["current_a"] == pytest.approx(16.0)
    e0 = g["energy_wh"]
    g2 = board.wait_for(lambda: (lambda x: x if x["energy_wh"] > e0 + 0.5 else None)(board.get()), 10,
                        what="energy rising")
    assert g2["session_active"] is True
    board.control("ev_state", state="B")
    board.wait_for({"relay": False, "state": "B"}, 5)


def test_reset_and_power_cycle_keep_the_flash_and_the_vehicle(board):
    board.control("ev_state", state="C")
    board.wait_for(lambda: _charging(board), 10)
    boots = board.get()["boots"]
    n = board.boots
    board.control("reset")
    board.wait_boots(n + 1)
    g = board.wait_for(lambda: _charging(board), 15, what="charging after reset")
    assert g["reset_cause"] == "reset"
    assert g["boots"] == boots + 1, "the boot record on the same flash counts on"
    board.power_cycle()
    board.wait_boots(n + 2)
    g = board.wait_for(lambda: _charging(board), 15, what="charging after power cycle")
    assert g["reset_cause"] == "power" and g["boots"] == boots + 2
    assert board.exits[-2:] == [(4, "reset"), (-9, "power")]


def test_faults_over_the_control_channel(board):
    board.control("ev_state", state="C")
    board.wait_for(lambda: _charging(board), 10)
    board.control("trip")
    g = board.wait_for({"relay": False, "fault": "rcd_trip"}, 5)
    assert g["rcd_tripped"] is True
    board.control("rcd_reset")
    board.control("command", name="clear_faults", payload={"id": 1})
    board.control("diode", on=False)
    board.wait_for({"fault": "diode_missing", "relay": False}, 10)
    board.control("diode", on=True)
    board.control("unplug")
    board.control("command", name="clear_faults", payload={"id": 2})
    board.wait_for({"state": "A", "fault": None}, 10)


def test_overcurrent_and_self_test_over_the_control_channel(board):
    assert board.get()["selftest"] == "ok"
    board.control("overdraw", a=8)     # the vehicle draws 8 A over the offer
    board.control("plug", state="C")
    board.wait_for(lambda: _charging(board), 10)
    g = board.wait_for({"fault": "overcurrent", "relay": False}, 20)   # after 7 s
    assert g["selftest"] == "ok"
    board.control("overdraw", a=0)
    board.control("unplug")
    board.wait_for({"state": "A", "fault": None}, 10)


def test_bad_control_requests_get_an_error_and_change_nothing(board):
    with pytest.raises(VBoardError, match="unknown cmd"):
        board.control("launch")
    with pytest.raises(VBoardError, match="max_current_a"):
        board.control("plug", state="C", max_current_a="lots")
    with pytest.raises(VBoardError, match="no vehicle"):
        board.control("ev_state", state="C")
    with socket.create_connection(("127.0.0.1", board.control_port), timeout=5) as s:
        s.sendall(b"{not json\n[1, 2]\n")
        f = s.makefile("rb")
        r1, r2 = json.loads(f.readline()), json.loads(f.readline())
    assert r1["ok"] is False and "JSON" in r1["error"]
    assert r2["ok"] is False and "object" in r2["error"]
    g = board.get()
    assert g["plugged"] is False and g["state"] == "A"


def test_watchdog_resets_a_hung_board(board):
    n = board.boots
    board.control("hang")
    board.wait_boots(n + 1, 15)
    assert board.exits[-1][1] == "wdt"
    g = board.wait_for(lambda: board.get(), 15)
    assert g["reset_cause"] == "wdt" and g["ticks"] > 0


def test_power_cut_after_n_flash_writes(board):
    n = board.boots
    board.control("plug", state="C")
    board.wait_for(lambda: _charging(board), 10)
    board.control("power_cut_after", writes=1)
    board.control("unplug")        # the finished session is written to the flash: cut
    board.wait_boots(n + 1, 15)
    assert board.exits[-1] == (6, "power")
    g = board.wait_for(lambda: board.get(), 15)
    assert g["reset_cause"] == "power" and g["slot"] == "a"


def test_two_boards_side_by_side(board, tmp_path):
    d = tmp_path / "vb-b"
    d.mkdir()
    (d / "vboard.lock").write_text("999999999\n")     # left by a board that was killed: stale
    other = VBoard(str(d), id="vb-b").start()
    try:
        other.wait_output("agent: vb-b", 30)
        assert other.control_port != board.control_port and other.pty != board.pty
        other.control("plug", state="C", max_current_a=10)
        g = other.wait_for(lambda: _charging(other), 10)
        assert g["device_id"] == "vb-b" and g["current_a"] == pytest.approx(10.0)
        assert board.get()["plugged"] is False
    finally:
        other.stop()
    with pytest.raises(VBoardError):
        other.control("get", timeout=0.5)


def test_a_second_board_on_a_running_boards_directory_is_refused(board, capsys):
    from tools import vboard
    state = os.path.join(board.dir, "vboard.json")
    with open(state) as f:
        live = json.load(f)
    with pytest.raises(VBoardError, match="in use by a running virtual board"):
        VBoard(board.dir, id="vb-a").start()
    assert vboard.main(["--dir", board.dir, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "in use by a running virtual board (pid %d)" % os.getpid() in err and "Traceback" not in err
    with open(state) as f:
        assert json.load(f) == live                    # the live board's state file is still there
    assert board.get()["device_id"] == "vb-a"          # and the board still runs


def test_cli_bad_input_one_line_error_and_no_keyless_board(tmp_path, capsys):
    from tools import vboard
    cases = [
        (["--dir", str(tmp_path / "n1")], "needs the release key"),
        (["--dir", str(tmp_path / "n2"), "--key", str(tmp_path / "nope.pub")], "no such file"),
        (["--dir", str(tmp_path / "n3"), "--no-key", "--config", "{bad"], "not JSON"),
        (["--dir", str(tmp_path / "n4"), "--no-key", "--heap", "lots"], "heap"),
        (["--dir", str(tmp_path / "n5"), "--no-key", "--key", "k.pub"], "exclude"),
    ]
    for argv, text in cases:
        with pytest.raises(SystemExit) as ei:
            vboard.main(argv)
        err = capsys.readouterr().err
        assert ei.value.code == 2 and text in err and "Traceback" not in err, (argv, err)
        assert not os.path.exists(argv[1])               # nothing made
