"""`evsectl deploy` (tools/deploy.py) against a virtual board that starts with
an EMPTY flash (a blank LittleFS, as a freshly flashed MicroPython board):
deploy a signed release over the pty, the board boots it; refusals (board
id, .mpy version, signature, lib/, config) leave every file on the board as
it was; deploying again works."""
import hashlib
import json
import os
import subprocess

import pytest

from tools import bundle as hostbundle
from tools import certs, deploy, keys, mpunix, release
from tools.vboard import VBoard

MPREMOTE = deploy.mpremote_path()


def _sign(key, payload, out, version, board):
    subprocess.run([keys.imgtool(), "sign", "--key", key, "--version", version,
                    "--header-size", "0x20", "--pad-header", "--align", "4",
                    "--slot-size", str(16 << 20), "--custom-tlv", "0xa0", board, payload, out],
                   check=True, capture_output=True)


def _wrong_mpy_release(key, good_img, tmp):
    """The good release's files with every .mpy header claiming bytecode v5,
    bundled and signed properly: only the .mpy version is wrong."""
    res = deploy.verify.verify(good_img, [key])
    with open(good_img, "rb") as f:
        data = f.read()
    hs, ps = res["header_size"], res["payload_size"]
    _, files = hostbundle.read(data[hs:hs + ps])
    tree = os.path.join(tmp, "tree5")
    for path, raw in files:
        p = os.path.join(tree, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if path.endswith(".mpy"):
            raw = raw[:1] + b"\x05" + raw[2:]
        with open(p, "wb") as f:
            f.write(raw)
    payload = os.path.join(tmp, "payload5.bin")
    meta = hostbundle.build(tree, payload, "1.2.0", board="sim", include=["firmware"])
    assert meta["mpy"] == [5, 0]
    out = os.path.join(tmp, "evse-sim-1.2.0-mpy5.img")
    _sign(key, payload, out, "1.2.0", "sim")
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("deploykit"))
    pem, pub, _ = keys.keygen(os.path.join(d, "keys", "release"))
    out = os.path.join(d, "build")
    _, good, _ = release.build(pem, "1.2.0", "sim", security_counter=3, out=out)
    _, newer, _ = release.build(pem, "1.3.0", "sim", security_counter=3, out=out)
    _, esp, _ = release.build(pem, "1.2.0", "esp32", security_counter=3, out=out)
    with open(os.path.join(out, "evse-sim-1.2.0.img"), "rb") as f:
        data = bytearray(f.read())
    data[0x20 + 200] ^= 0x01                       # one bit of the payload
    tampered = os.path.join(d, "evse-sim-1.2.0-tampered.img")
    with open(tampered, "wb") as f:
        f.write(data)
    mpy5 = _wrong_mpy_release(pem, os.path.join(out, "evse-sim-1.2.0.img"), d)
    return {"dir": d, "pem": pem, "pub": pub, "good": good, "newer": newer, "esp32": esp,
            "tampered": tampered, "mpy5": mpy5}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    d = tmp_path_factory.mktemp("deployvb") / "vb-d"
    d.mkdir()
    b = VBoard(str(d), id="vb-d", blank=True).start()
    yield b
    b.stop()


def _snapshot(b):
    """{path: (size, sha256)} of every file on the board (via mpremote)."""
    code = ("import os, hashlib, binascii\n"
            "def w(p):\n"
            "    for e in os.ilistdir(p):\n"
            "        q = p.rstrip('/') + '/' + e[0]\n"
            "        if e[1] == 0x4000:\n"
            "            print('D', q)\n"
            "            w(q)\n"
            "        else:\n"
            "            h = hashlib.sha256()\n"
            "            with open(q, 'rb') as f:\n"
            "                h.update(f.read())\n"
            "            print('F', q, os.stat(q)[6], binascii.hexlify(h.digest()).decode())\n"
            "w('/')\n")
    p = subprocess.run([MPREMOTE, "connect", b.pty, "resume", "exec", code],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    snap = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == "D":
            snap[parts[1] + "/"] = None
        elif parts and parts[0] == "F":
            snap[parts[1]] = (int(parts[2]), parts[3])
    return snap


def _deploy(kit, b, rel, log=None, **kw):
    lines = [] if log is None else log
    kw.setdefault("board", None)
    return deploy.deploy(b.pty, rel, [kit["pub"]], "vb-d", log=lines.append, **kw)


def _boots_version(b, version, slot):
    b.wait_for(lambda: b.get(timeout=2).get("version") == version, 30,
               what="agent running %s" % version)
    g = b.get()
    assert (g["version"], g["slot"], g["trial"], g["device_id"]) == (version, slot, False, "vb-d")
    return g


# ---- pure helpers -------------------------------------------------------------------

def test_mpy_compatibility_rule_matches_the_device():
    board = 6 | (3 << 8)                                     # sys.implementation._mpy 2822
    assert deploy.mpy_compatible([6, 0], board)              # bytecode-only: sub-version 0
    assert deploy.mpy_compatible([6, 3], board)
    assert not deploy.mpy_compatible([6, 2], board)          # native code for another sub-version
    assert not deploy.mpy_compatible([5, 0], board)
    assert deploy.mpy_compatible(None, board)                # .py sources run anywhere
    assert not deploy.mpy_compatible([6, 0], None)           # board without _mpy: cannot tell


def test_board_id_precedence_and_config_merge():
    assert deploy.board_id("esp32", {"board": "sim"}) == ("esp32", "--board")
    assert deploy.board_id(None, {"board": "rp2"}) == ("rp2", "/config.json on the board")
    bid, why = deploy.board_id(None, None)
    assert bid is None and "--board" in why
    cfg = deploy.build_config({"device_id": "old", "max_current_a": 16, "mqtt": {"host": "a", "keepalive": 30}},
                              {"max_current_a": 20, "mqtt": {"host": "b"}}, "cp-1", "sim",
                              broker="10.0.0.5:8883", user="u", password="p", ca_path="/trust/ca.pem")
    assert cfg == {"device_id": "cp-1", "board": "sim", "max_current_a": 20,
                   "mqtt": {"host": "10.0.0.5", "port": 8883, "keepalive": 30, "user": "u",
                            "password": "p", "tls": True, "ca": "/trust/ca.pem"}}
    assert deploy.validate_config(cfg) is None
    assert "max_current_a" in deploy.validate_config(dict(cfg, max_current_a=500))
    assert "mqtt.password needs mqtt.user" in deploy.validate_config(
        {"device_id": "x", "mqtt": {"password": "p"}})


# ---- against a virtual board -------------------------------------------------------------

def test_deploy_to_an_empty_board_and_it_boots_the_release(kit, board):
    with pytest.raises(deploy.DeployError, match="board id is unknown"):
        _deploy(kit, board, kit["good"])                     # empty board, no --board
    assert set(_snapshot(board)) == set(), "the refused deploy wrote nothing"
    log = []
    r = _deploy(kit, board, kit["good"], log, board="sim", broker="127.0.0.1:1883")
    text = "\n".join(log)
    assert r["slot"] == "a" and r["record"]["active"] == "a" and r["record"]["floor"] == 3
    assert r["manifest"]["version"] == "1.2.0"
    for what in ("board id sim (from --board", "/slots/a.img <-", "/trust/keys.bin",
                 "/lib/umqtt/simple", "the board now holds", "bootable, active"):
        assert what in text, what
    _boots_version(board, "1.2.0", "a")                     # deploy reset the board
    snap = _snapshot(board)                                 # (interrupts the agent: REPL)
    for p in ("/boot.py", "/main.py", "/config.json", "/trust/keys.bin", "/slots/a/MANIFEST",
              "/slots/a/firmware/agent.mpy"):
        assert p in snap, p
    assert not any(p.startswith("/_deploy") or p.endswith(".img") for p in snap), "staging removed"
    with open(kit["pub"], "rb") as f:
        assert snap["/trust/keys.bin"] == (32, hashlib.sha256(f.read()).hexdigest())
    with open(os.path.join(mpunix.ROOT, "boot.py"), "rb") as f:
        assert snap["/boot.py"][1] == hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("case", ["wrong_board", "wrong_mpy", "bad_signature", "no_lib",
                                  "bad_config", "dry_run", "bad_mfr_root"])
def test_refusals_leave_the_board_unchanged(kit, board, case, tmp_path):
    before = _snapshot(board)
    assert "/slots/a/MANIFEST" in before
    kw, rel = {}, kit["good"]
    if case == "wrong_board":
        rel, want = kit["esp32"], "release is for board 'esp32', this board is 'sim' \\(from /config.json"
    elif case == "wrong_mpy":
        rel, want = kit["mpy5"], "bytecode v5.0, the board's MicroPython runs v6"
    elif case == "bad_signature":
        rel, want = kit["tampered"], "does not verify against the trusted key"
    elif case == "no_lib":
        kw["lib_dir"], want = str(tmp_path), "make deps"
    elif case == "bad_mfr_root":
        # an OCPP Manufacturer root must be a CA (a signing certificate is not)
        rc, rk = certs.make_root(str(tmp_path / "pki"))
        sc, _ = certs.make_signing(str(tmp_path / "pki"), rc, rk)
        kw["ocpp_mfr_root"], want = sc, "--ocpp-mfr-root: .* not a CA certificate"
    elif case == "bad_config":
        extra = tmp_path / "extra.json"
        extra.write_text(json.dumps({"max_current_a": 500}))
        kw["config"], want = str(extra), "config: max_current_a must be a number 6..80"
    if case == "dry_run":
        # (--ocpp / --ocpp-auth-key reach the config it would write)
        r = _deploy(kit, board, rel, dry_run=True, ocpp="ws://127.0.0.1:9000/ocpp",
                    ocpp_auth_key="0123456789abcdef")
        assert r["dry_run"] and r["slot"] == "b" and r["restarted"]
        assert r["config"]["ocpp"] == {"url": "ws://127.0.0.1:9000/ocpp", "auth_key": "0123456789abcdef"}
    else:
        with pytest.raises(deploy.DeployError, match=want) as ei:
            _deploy(kit, board, rel, **kw)
        assert "unchanged" in ei.value.state
        # refused after the probe (which interrupts the agent): the agent runs again, and it says so
        probed = case not in ("no_lib", "bad_signature", "bad_mfr_root")
        assert (deploy.RESTARTED in ei.value.state) == probed
    probed = case not in ("no_lib", "bad_signature", "bad_mfr_root")
    if probed:
        _boots_version(board, "1.2.0", "a")      # not left at the REPL, offline: it booted again
    after = _snapshot(board)
    if probed:
        # a boot counts itself in the boot record (the bootstrap's write, not the deploy's)
        after = {p: v for p, v in after.items() if not p.startswith("/bootrec.")}
        before = {p: v for p, v in before.items() if not p.startswith("/bootrec.")}
    assert after == before


def test_cli_refusal_prints_reason_and_board_state(kit, board, capsys):
    rc = deploy.main(["--port", board.pty, "--release", kit["esp32"], "--key-pub", kit["pub"],
                      "--id", "vb-d", "--yes"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "REFUSED: the release is for board 'esp32'" in err
    assert "board state: nothing was written: the board is unchanged" in err


def test_a_charging_session_is_refused_unless_forced(kit, board):
    board.reset()                          # the last snapshot left it at the REPL
    _boots_version(board, "1.2.0", "a")
    board.control("plug", state="C", max_current_a=16)
    board.wait_for(lambda: board.get()["session_active"], 20, what="a charging session")
    with pytest.raises(deploy.DeployError, match="charging session is running") as ei:
        _deploy(kit, board, kit["newer"])
    assert ei.value.state.startswith("nothing was written") and deploy.RESTARTED in ei.value.state
    _boots_version(board, "1.2.0", "a")
    # the EV stayed in C: the restarted agent starts a session again, but only
    # after its power-on self-test (firmware/evse.py: no session during it)
    board.wait_for(lambda: board.get()["session_active"], 20, what="the session again")
    log = []
    r = _deploy(kit, board, kit["newer"], dry_run=True, force=True, log=log)
    assert r["dry_run"] and any("--force" in x for x in log)
    _boots_version(board, "1.2.0", "a")
    board.control("unplug")
    board.wait_for({"relay": False}, 10)


def test_redeploy_on_a_deployed_board(kit, board):
    r = _deploy(kit, board, kit["newer"])                    # board id from /config.json
    assert r["board_source"] == "/config.json on the board"
    assert r["slot"] == "b", "the inactive slot; slot a stays as the fallback"
    _boots_version(board, "1.3.0", "b")
    # again, into the running slot, with the OCPP Manufacturer root (--ocpp-mfr-root)
    rc, _ = certs.make_root(os.path.join(kit["dir"], "mfr"))
    r = _deploy(kit, board, kit["newer"], slot="b", ocpp_mfr_root=rc)
    assert r["slot"] == "b" and r["record"]["active"] == "b"
    assert r["config"]["mqtt"] == {"host": "127.0.0.1", "port": 1883}, "kept from the board's config"
    _boots_version(board, "1.3.0", "b")
    snap = _snapshot(board)
    assert "/slots/a/MANIFEST" in snap and "/slots/b/MANIFEST" in snap
    assert not any(p.startswith("/_deploy") or p.endswith(".img") for p in snap)
    m0 = certs.certstore_file(rc)                            # DER + CRC-32 (firmware/ocpp/certstore.py)
    assert snap["/ocpp/certs/M0.der"] == (len(m0), hashlib.sha256(m0).hexdigest())
