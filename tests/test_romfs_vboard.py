"""ROMFS slots on a virtual board of the 32-bit lane at --heap 128K (a board's
heap): the first boot builds slot a's ROMFS image into its ROM partition
(bootrom.py with firmware/ota/romslot.py) and runs the agent from it; the
board charges; an update (download from tools.serve, verify, install, the new
slot's image written into its own partition) boots slot b on trial from ROM,
and the trial is confirmed. The MQTT link is connected to the test broker
(tests/prep/broker.py) all along: the update is started by the backend's
cmd/update_firmware over the broker, the link stays up while the OTA chain
loads and verifies, and it is up again on the new slot (the offline board
and series of updates of both sizes: tests/bench/host_romfs.py)."""
import datetime
import json
import os
import time

import pytest

from tests.prep import broker as B
from tools import keys, mpunix, release, serve
from tools.vboard import VBoard


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


def _msgs(be, topic):
    with be.lock:
        return [json.loads(p) for t, p, _ in be.msgs if t == topic and p]


def test_romfs_board_boots_from_rom_charges_and_updates_at_128k_with_mqtt(tmp_path, monkeypatch):
    b32 = mpunix.mp32_binary()
    if b32 is None:
        pytest.skip("no 32-bit MicroPython (build one with ../shared/mp32/build.sh, or MP32=path)")
    monkeypatch.setenv("MICROPYTHON", b32)
    pem, pub, _ = keys.keygen(str(tmp_path / "keys" / "rel"))
    out = tmp_path / "rel"
    img, _, _ = release.build(pem, "0.2.0", "sim", out=str(out))
    srv, port = serve.serve(str(out))
    (tmp_path / "broker").mkdir()
    br = B.Broker(str(tmp_path / "broker"))
    br.start()
    be = B.Backend(br.port)
    b = VBoard(str(tmp_path / "vb"), id="vbr", heap="128K", romfs=True, keys=[pub], wdt_ms=3000,
               broker="127.0.0.1:%d" % br.port,
               config={"mqtt": {"user": B.USER, "password": B.PASSWORD}, "health": {"trial_s": 10}})
    b.start()
    try:
        b.wait_output("agent: vbr", 60)
        assert "boot: slot a code from ROM" in b.console()
        b.wait_for(lambda: b.get().get("link") == "up", 20, what="MQTT link up")
        time.sleep(1)      # the connect's discovery round and retained topics are out
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
        be.client.publish("evse/vbr/cmd/update_firmware", json.dumps({
            "id": "u1", "requestId": 5, "retrieveDateTime": _now(),
            "location": "http://127.0.0.1:%d/%s" % (port, os.path.basename(img))}), qos=1)
        b.wait_for(lambda: {"id": "u1", "ok": True} in _msgs(be, "evse/vbr/reply"), 20,
                   what="the command's reply over MQTT")
        b.wait_boots(boots + 1, 60)
        st = [m.get("status") for m in _msgs(be, "evse/vbr/firmware")]
        # the chain loaded, downloaded and verified with the link up (its
        # statuses reached the broker before the install step suspended it;
        # the firmware topic is retained, latest value first: a status that is
        # followed by the next one within a poll may be coalesced away)
        assert "Downloading" in st and ("SignatureVerified" in st or "Installing" in st), \
            sorted(set(st))
        b.wait_output("boot: slot b code from ROM", 30)
        g = b.wait_for(lambda: (lambda g: g if g.get("version") == "0.2.0" else None)(b.get()), 30)
        assert g["slot"] == "b" and g["rom"] is True
        b.wait_output("agent: trial boot confirmed", 40)
        g = b.get()
        assert (g["slot"], g["version"], g["trial"], g["rom"]) == ("b", "0.2.0", False, True)
        assert "import failed" not in b.console() and "not written" not in b.console()
        assert "MemoryError" not in b.console()
        b.wait_for(lambda: b.get().get("link") == "up", 20, what="MQTT link up on slot b")
        b.wait_for(lambda: "Installed" in [m.get("status") for m in _msgs(be, "evse/vbr/firmware")],
                   20, what="Installed over MQTT from slot b")
    finally:
        b.stop()
        srv.shutdown()
        be.stop()
        br.stop()
