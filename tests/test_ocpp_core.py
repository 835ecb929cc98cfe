"""OCPP 1.6J core profile: a virtual board (the real bootstrap and agent on the
unix port, tools/vboard.py) against the `ocpp` package as CSMS (tests/prep/
csms.py, every payload schema-checked). Test names follow the OCPP 1.6
conformance test cases (TC_xxx_CP) where one exists."""
import pytest

from ocpp.v16 import call

from tests.prep.csms import CSMS
from tools.vboard import VBoard


def _board(tmp_path, cs, name="cp1", **cfg):
    c = {"mqtt": {"host": ""}, "require_auth": True}
    c.update(cfg)
    return VBoard(str(tmp_path / name), id=name, ocpp=cs.url, config=c, wdt_ms=3000).start()


@pytest.fixture
def csms():
    cs = CSMS(interval=2).start()
    yield cs
    cs.stop()
    assert cs.errors == [], "schema violations / protocol errors: %s" % cs.errors


def _status(cs, cid, connector=1):
    s = [p for p in cs.calls("StatusNotification", cid) if p["connectorId"] == connector]
    return s[-1]["status"] if s else None


def test_TC_001_cold_boot_accepted(tmp_path, csms):
    b = _board(tmp_path, csms)
    try:
        boot = csms.wait(lambda: csms.calls("BootNotification", "cp1"), 30)[0]
        assert boot["chargePointVendor"] and boot["chargePointModel"]
        assert boot["firmwareVersion"] == b.get()["version"]
        csms.wait(lambda: _status(csms, "cp1", 0) == "Available" and _status(csms, "cp1") == "Available")
        # heartbeats at the interval the CSMS gave (2 s)
        csms.wait(lambda: len(csms.calls("Heartbeat", "cp1")) >= 2, 15, "heartbeats")
        conn = csms.connects[0]
        assert conn[1] == "cp1" and conn[2] == "ocpp1.6"
        assert b.get()["ocpp"] == "accepted"
    finally:
        b.stop()


def test_TC_003_regular_charging_session_plugin_first(tmp_path, csms):
    csms.auth["TAG1"] = "Accepted"
    b = _board(tmp_path, csms)
    try:
        csms.wait(lambda: _status(csms, "cp1") == "Available", 30)
        b.control("plug", state="B", max_current_a=16)
        csms.wait(lambda: _status(csms, "cp1") == "Preparing")
        b.control("tag", tag="TAG1")
        csms.wait(lambda: csms.calls("Authorize", "cp1"))
        st = csms.wait(lambda: csms.calls("StartTransaction", "cp1"))[0]
        assert st["idTag"] == "TAG1" and st["connectorId"] == 1
        b.control("ev_state", state="C")
        csms.wait(lambda: _status(csms, "cp1") == "Charging", 20)
        b.wait_for(lambda: b.get()["energy_wh"] > st["meterStart"] + 20, 20, what="energy")
        b.control("unplug")
        sp = csms.wait(lambda: csms.calls("StopTransaction", "cp1"))[0]
        assert sp["transactionId"] == 101 and sp["reason"] == "EVDisconnected"
        assert sp["meterStop"] >= st["meterStart"] + 20
        csms.wait(lambda: _status(csms, "cp1") == "Available")
        seq = [s["status"] for s in csms.calls("StatusNotification", "cp1") if s["connectorId"] == 1]
        assert "Preparing" in seq and "Charging" in seq
    finally:
        b.stop()


def test_TC_010_remote_start_and_TC_012_remote_stop(tmp_path, csms):
    b = _board(tmp_path, csms)
    try:
        csms.wait(lambda: _status(csms, "cp1") == "Available", 30)
        b.control("plug", state="C", max_current_a=16)
        r = csms.call("cp1", call.RemoteStartTransaction(id_tag="REMOTE1"))
        assert r.status == "Accepted"
        st = csms.wait(lambda: csms.calls("StartTransaction", "cp1"))[0]
        assert st["idTag"] == "REMOTE1"
        csms.wait(lambda: _status(csms, "cp1") == "Charging", 20)
        assert csms.call("cp1", call.RemoteStartTransaction(id_tag="X")).status == "Rejected"
        assert csms.call("cp1", call.RemoteStopTransaction(transaction_id=999)).status == "Rejected"
        assert csms.call("cp1", call.RemoteStopTransaction(transaction_id=101)).status == "Accepted"
        sp = csms.wait(lambda: csms.calls("StopTransaction", "cp1"))[0]
        assert sp["reason"] == "Remote" and sp["transactionId"] == 101
        csms.wait(lambda: _status(csms, "cp1") == "Finishing")
        b.wait_for({"relay": False}, 10)
    finally:
        b.stop()
