"""ROMFS slots on a virtual board of the 32-bit lane at --heap 128K (a board's
heap): the first boot builds slot a's ROMFS image into its ROM partition
(bootrom.py with firmware/ota/romslot.py) and runs the agent from it; the
board charges; an update (download from tools.serve, verify, install, the new
slot's image written into its own partition) boots slot b on trial from ROM,
and the trial is confirmed. Offline board (no MQTT): the update is started
through the control channel's `command`, as MQTT would."""
import datetime
import os

import pytest

from tools import keys, mpunix, release, serve
from tools.vboard import VBoard


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


def test_romfs_board_boots_from_rom_charges_and_updates_at_128k(tmp_path, monkeypatch):
    b32 = mpunix.mp32_binary()
    if b32 is None:
        pytest.skip("no 32-bit MicroPython (build one with ../shared/mp32/build.sh, or MP32=path)")
    monkeypatch.setenv("MICROPYTHON", b32)
    pem, pub, _ = keys.keygen(str(tmp_path / "keys" / "rel"))
    out = tmp_path / "rel"
    img, _, _ = release.build(pem, "0.2.0", "sim", out=str(out))
    srv, port = serve.serve(str(out))
    b = VBoard(str(tmp_path / "vb"), id="vbr", heap="128K", romfs=True, keys=[pub], wdt_ms=3000,
               config={"mqtt": {"host": ""}, "health": {"trial_s": 10}})
    b.start()
    try:
        b.wait_output("agent: vbr", 60)
        assert "boot: slot a code from ROM" in b.console()
        g = b.control("get", gc=True)
        assert g["rom"] is True and g["slot"] == "a"
        assert g["rom_heap"] == 2 * 192 * 1024
        assert os.path.getsize(str(tmp_path / "vb" / "rom0.img")) == 192 * 1024
        live = g["mem_alloc"] - g["rom_heap"] - g["rom_script"]
        assert live <= 64 * 1024, live            # the agent's own idle heap, from ROM
        b.control("plug", state="C", max_current_a=16)
        b.wait_for({"relay": True, "contacts": True}, 20)
        b.control("unplug")
        b.wait_for({"relay": False}, 20)
        boots = b.boots
        r = b.control("command", name="update_firmware", payload={
            "id": "u1", "requestId": 5, "retrieveDateTime": _now(),
            "location": "http://127.0.0.1:%d/%s" % (port, os.path.basename(img))})
        assert r["reply"] == {"id": "u1", "ok": True}
        b.wait_boots(boots + 1, 60)
        b.wait_output("boot: slot b code from ROM", 30)
        g = b.wait_for(lambda: (lambda g: g if g.get("version") == "0.2.0" else None)(b.get()), 30)
        assert g["slot"] == "b" and g["rom"] is True
        b.wait_output("agent: trial boot confirmed", 40)
        g = b.get()
        assert (g["slot"], g["version"], g["trial"], g["rom"]) == ("b", "0.2.0", False, True)
        assert "import failed" not in b.console() and "not written" not in b.console()
    finally:
        b.stop()
        srv.shutdown()
