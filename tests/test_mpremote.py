"""mpremote against a virtual board's console pty, exactly as with a board on
USB: `resume` (no soft reset) and the plain form (soft reset into the raw
REPL, which the host tool plays as a board does)."""
import os
import subprocess
import sys

import pytest

from tools.vboard import VBoard

MPREMOTE = os.path.join(os.path.dirname(sys.executable), "mpremote")


def _mpremote(b, *args, timeout=30):
    p = subprocess.run([MPREMOTE, "connect", b.pty_link or b.pty] + list(args),
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "mpremote %s failed (%d):\n%s%s\n--- console ---\n%s" % (
        " ".join(args), p.returncode, p.stdout, p.stderr, b.console()[-1500:])
    return p.stdout


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    d = tmp_path_factory.mktemp("mpr")
    b = VBoard(str(d / "vb-m"), id="vb-m", pty_link=str(d / "console")).start()
    b.wait_output("agent: vb-m", 30)
    yield b
    b.stop()


def test_fs_ls_with_resume(board):
    out = _mpremote(board, "resume", "fs", "ls")
    for name in ("boot.py", "main.py", "config.json", "slots/", "lib/", "trust/"):
        assert name in out, out
    assert board.mode == "repl", "the running main.py was interrupted, as on a board"


def test_fs_cp_and_read_back(board, tmp_path):
    src = tmp_path / "note.txt"
    src.write_bytes(b"written by mpremote\n" * 50)
    _mpremote(board, "resume", "fs", "cp", str(src), ":note.txt")
    back = tmp_path / "back.txt"
    _mpremote(board, "resume", "fs", "cp", ":note.txt", str(back))
    assert back.read_bytes() == src.read_bytes()
    out = _mpremote(board, "resume", "exec", "import os; print(os.stat('/note.txt')[6])")
    assert out.strip() == str(len(src.read_bytes()))


def test_exec_and_run(board, tmp_path):
    assert _mpremote(board, "resume", "exec", "print(1+1)").strip() == "2"
    script = tmp_path / "s.py"
    script.write_text("import os\nprint('slots', sorted(os.listdir('/slots')))\n")
    assert "slots ['a']" in _mpremote(board, "resume", "run", str(script))


def test_plain_mpremote_soft_resets_into_the_raw_repl(board):
    assert _mpremote(board, "exec", "print(6*7)").strip() == "42"
    assert any(how == "soft-raw" for _, how in board.exits)


def test_board_runs_again_after_reset(board):
    n = board.boots
    board.reset()
    board.wait_boots(n + 1)
    g = board.wait_for(lambda: board.get(), 15)
    assert g["slot"] == "a" and board.mode == "boot"
    out = _mpremote(board, "resume", "exec", "print(open('/note.txt').read(7))")
    assert out.strip() == "written", "the file copied earlier is still on the flash"
