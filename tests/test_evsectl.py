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
    assert p.returncode == 1 and "refusing to overwrite" in p.stderr
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
    assert p.returncode == 1 and "MAJOR.MINOR.REVISION" in p.stderr
    assert not (tmp_path / "o").exists()
