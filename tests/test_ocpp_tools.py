"""Host tools that point a board at a CSMS (CONTRACT): `evsectl vboard --ocpp URL`
(new and existing flash) and `evsectl deploy --ocpp URL --ocpp-auth-key K`
(the config it writes, checked by firmware/config.py's rules)."""
import os
import subprocess

import pytest

from tools import certs, deploy, mpunix, provision
from tools.vboard import VBoard


def test_vboard_ocpp_writes_a_new_flash_and_merges_into_an_existing_one(tmp_path):
    d = str(tmp_path / "vbx")
    (tmp_path / "vbx").mkdir()
    VBoard(d, id="vbx", ocpp="ws://127.0.0.1:9000/ocpp", config={"max_current_a": 16})._prepare_flash()
    cfg = provision.update_config(d + "/flash.img", {"telemetry_ms": 10000})
    assert cfg["ocpp"]["url"] == "ws://127.0.0.1:9000/ocpp"
    assert cfg["mqtt"]["host"] == "" and cfg["max_current_a"] == 16   # OCPP only: MQTT off
    VBoard(d, id="vbx", ocpp="ws://10.0.0.1:80/cs")._prepare_flash()
    cfg = provision.update_config(d + "/flash.img", {"telemetry_ms": 10000})
    assert cfg["ocpp"]["url"] == "ws://10.0.0.1:80/cs" and cfg["max_current_a"] == 16


def test_deploy_ocpp_options_build_a_valid_config_and_bad_ones_are_refused():
    cfg = deploy.build_config({"device_id": "old", "mqtt": {"host": "a"}}, None, "cp-7", "sim",
                              ocpp_url="wss://csms.example:443/ocpp", ocpp_auth_key="0123456789abcdef")
    assert cfg["ocpp"] == {"url": "wss://csms.example:443/ocpp", "auth_key": "0123456789abcdef"}
    assert deploy.validate_config(cfg) == "ocpp.url wss:// needs ocpp.ca"
    cfg["ocpp"]["ca"] = "/trust/csms.pem"
    assert deploy.validate_config(cfg) is None
    bad = deploy.build_config({}, None, "cp-7", "sim", ocpp_url="http://x/ocpp")
    assert "ocpp.url must be null or a ws://" in deploy.validate_config(bad)
    short = deploy.build_config({}, None, "cp-7", "sim", ocpp_url="ws://h/o", ocpp_auth_key="short")
    assert "ocpp.auth_key" in deploy.validate_config(short)


def test_deploy_help_lists_the_ocpp_options(capsys):
    import pytest
    with pytest.raises(SystemExit):
        deploy.main(["--help"])
    out = capsys.readouterr().out
    assert "--ocpp URL" in out and "--ocpp-auth-key K" in out


def _read_flash(img, path):
    # a file of a flash image, read by MicroPython's own LittleFS
    code = ("import sys, vfs\nfrom firmware.hal.simflash import FileBlockDevice\n"
            "d = FileBlockDevice(sys.argv[1], 4096)\n"
            "vfs.mount(vfs.VfsLfs2(d, readsize=32, progsize=32, lookahead=32), '/f')\n"
            "print(open('/f/' + sys.argv[2], 'rb').read().hex())\n")
    script = os.path.join(os.path.dirname(img), "read.py")
    with open(script, "w") as f:
        f.write(code)
    p = subprocess.run(mpunix.argv(script, img, path, heap="1M"), env=mpunix.env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return bytes.fromhex(p.stdout.strip())


def test_vboard_ocpp_mfr_root_on_a_new_and_an_existing_flash(tmp_path):
    r1, k1 = certs.make_root(str(tmp_path / "r1"))
    r2, _ = certs.make_root(str(tmp_path / "r2"), cn="Second Root")
    d = str(tmp_path / "vbm")
    os.makedirs(d)
    VBoard(d, id="vbm", ocpp="ws://127.0.0.1:9000/ocpp", ocpp_mfr_root=r1)._prepare_flash()
    m0 = _read_flash(d + "/flash.img", "ocpp/certs/M0.der")
    assert m0 == certs.certstore_file(r1)
    VBoard(d, id="vbm", ocpp_mfr_root=r2)._prepare_flash()       # existing flash: replaced
    assert _read_flash(d + "/flash.img", "ocpp/certs/M0.der") == certs.certstore_file(r2)
    # not a CA (a signing certificate), or not a certificate: refused, the flash keeps r2
    sc, _ = certs.make_signing(str(tmp_path / "s"), r1, k1)
    for bad, words in ((sc, "not a CA certificate"), (k1, "not a PEM or DER certificate")):
        with pytest.raises(ValueError, match=words):
            VBoard(d, id="vbm", ocpp_mfr_root=bad)._prepare_flash()
    assert _read_flash(d + "/flash.img", "ocpp/certs/M0.der") == certs.certstore_file(r2)
