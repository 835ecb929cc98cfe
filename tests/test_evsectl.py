"""evsectl on the host: every subcommand explains itself; keygen, release and
verify work together and refuse bad input clearly."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVSECTL = [sys.executable, "-m", "tools.evsectl"]
COMMANDS = ("keygen", "release", "verify", "serve", "vboard", "deploy", "rollout", "monitor")


def run(*args):
    return subprocess.run(EVSECTL + list(args), cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_subcommand_has_help(cmd):
    p = run(cmd, "--help")
    assert p.returncode == 0, p.stderr
    assert ("evsectl %s" % cmd) in p.stdout and len(p.stdout.splitlines()) > 3


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    d = tmp_path_factory.mktemp("evsectl")
    p = run("keygen", str(d / "k"))
    assert p.returncode == 0, p.stderr
    p = run("release", "--key", str(d / "k.pem"), "--version", "2.1.0", "--board", "sim",
            "--security-counter", "7", "--out", str(d / "out"))
    assert p.returncode == 0, p.stderr
    return d


def test_keygen_refuses_to_overwrite(signed):
    before = (signed / "k.pem").read_bytes()
    p = run("keygen", str(signed / "k"))
    assert p.returncode == 2 and "refusing to overwrite" in p.stderr
    assert (signed / "k.pem").read_bytes() == before
    assert len((signed / "k.pub").read_bytes()) == 32


def test_release_writes_image_and_description(signed):
    desc = json.loads((signed / "out" / "evse-sim-2.1.0.json").read_text())
    img = (signed / "out" / "evse-sim-2.1.0.img").read_bytes()
    assert desc["version"] == "2.1.0" and desc["board"] == "sim" and desc["security_counter"] == 7
    assert desc["size"] == len(img) and img[:4] == bytes.fromhex("3db8f396")
    assert desc["mpy"][0] == 6


def test_verify_accepts_and_reports(signed):
    p = run("verify", str(signed / "out" / "evse-sim-2.1.0.img"), "--key", str(signed / "k.pub"),
            "--board", "sim")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "version          2.1.0+0" in p.stdout and "security counter 7" in p.stdout


@pytest.mark.parametrize("why,args,text", [
    ("wrong board", ["--board", "esp32"], "not 'esp32'"),
    ("untrusted key", ["--key-other"], "REJECTED"),
])
def test_verify_rejects(signed, tmp_path, why, args, text):
    img = str(signed / "out" / "evse-sim-2.1.0.img")
    if args == ["--key-other"]:
        assert run("keygen", str(tmp_path / "other")).returncode == 0
        args = ["--key", str(tmp_path / "other.pub")]
    else:
        args = ["--key", str(signed / "k.pub")] + args
    p = run("verify", img, *args)
    assert p.returncode == 1 and text in p.stdout, (why, p.stdout, p.stderr)


def test_release_refuses_bad_version_and_writes_nothing(signed, tmp_path):
    p = run("release", "--key", str(signed / "k.pem"), "--version", "1.x", "--board", "sim",
            "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "MAJOR.MINOR.REVISION" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists()


def test_release_refuses_an_unknown_board_id(signed, tmp_path):
    p = run("release", "--key", str(signed / "k.pem"), "--version", "1.0.0", "--board", "esp23",
            "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "not a known board (sim, esp32, rp2)" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "o").exists()
    import re
    from tools import release
    with open(os.path.join(ROOT, "firmware", "config.py")) as f:       # the same list as the device
        m = re.search(r"^BOARDS = \((.*)\)", f.read(), re.M)
    assert tuple(x.strip().strip('"') for x in m.group(1).split(",") if x.strip()) == release.BOARDS


def test_an_existing_release_is_not_overwritten(signed, tmp_path):
    out = signed / "out"
    files = {n: (out / n).read_bytes() for n in ("evse-sim-2.1.0.img", "evse-sim-2.1.0.json")}
    args = ["release", "--key", str(signed / "k.pem"), "--version", "2.1.0", "--board", "sim",
            "--security-counter", "7", "--out", str(out)]
    p = run(*args)
    assert p.returncode == 2 and "refusing to overwrite" in p.stderr and "--force" in p.stderr
    assert {n: (out / n).read_bytes() for n in files} == files
    assert run("keygen", str(tmp_path / "other")).returncode == 0
    p = run("release", "--key", str(tmp_path / "other.pem"), "--version", "2.1.0", "--board", "sim",
            "--out", str(out), "--force")                 # never with a different key, even forced
    assert p.returncode == 2 and "signed with another key" in p.stderr
    assert {n: (out / n).read_bytes() for n in files} == files
    p = run(*(args + ["--force"]))                         # the same key, forced: rebuilt
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "evse-sim-2.1.0.json").read_text())["key_hash"] == \
        json.loads(files["evse-sim-2.1.0.json"])["key_hash"]


def test_gitignore_keeps_keys_and_boards_out_of_git():
    with open(os.path.join(ROOT, ".gitignore")) as f:
        lines = {ln.strip() for ln in f}
    assert {"keys/", "boards/"} <= lines
    for path in ("keys/release.pem", "boards/vb1/flash.img"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path
