"""OCPP 1.6J: registration (cold boot pending / rejected), reset, and the
offline transaction queue (CSMS killed mid-transaction, a session started
offline, a reboot offline): every transaction message reaches the CSMS once,
in order, with the transactionId it assigned. The CSMS is the `ocpp` package
(tests/prep/csms.py); every payload is schema-checked."""
import time

import pytest
from ocpp.v16 import call

from tests.prep.csms import CSMS
from tools.vboard import VBoard


def _board(path, cs, name, **cfg):
    c = {"mqtt": {"host": ""}}
    c.update(cfg)
    return VBoard(str(path / name), id=name, ocpp=cs.url, config=c, wdt_ms=3000).start()


def _status(cs, cid, connector=1):
    s = [p for p in cs.calls("StatusNotification", cid) if p["connectorId"] == connector]
    return s[-1]["status"] if s else None


@pytest.fixture
def csms():
    cs = CSMS(interval=2).start()
    yield cs
    cs.stop()
    assert cs.errors == [], "schema violations / protocol errors: %s" % cs.errors


def test_TC_002_cold_boot_rejected_then_pending_then_accepted(tmp_path, csms):
    csms.boot, csms.interval = "Rejected", 1
    b = _board(tmp_path, csms, "cpr", require_auth=True)
    try:
        csms.wait(lambda: len(csms.calls("BootNotification", "cpr")) >= 2, 30)
        assert set(csms.actions("cpr")) == {"BootNotification"}, "nothing else while Rejected"
        assert b.get()["ocpp"] == "rejected"
        csms.boot = "Pending"
        n = len(csms.calls("BootNotification", "cpr"))
        csms.wait(lambda: len(csms.calls("BootNotification", "cpr")) >= n + 2, 10)
        assert b.get()["ocpp"] == "pending"
        # Pending: the CSMS may talk to the charge point; it still sends nothing else
        r = csms.call("cpr", call.GetConfiguration(key=["NumberOfConnectors"]))
        assert r.configuration_key[0]["value"] == "1"
        assert set(csms.actions("cpr")) == {"BootNotification"}
        csms.boot, csms.interval = "Accepted", 300
        csms.wait(lambda: _status(csms, "cpr", 0) == "Available" and _status(csms, "cpr") == "Available")
        assert b.get()["ocpp"] == "accepted"
    finally:
        b.stop()


def test_TC_013_hard_reset_with_transaction_and_TC_011_soft_reset(tmp_path, csms):
    b = _board(tmp_path, csms, "cph")
    try:
        csms.wait(lambda: _status(csms, "cph") == "Available", 30)
        b.control("plug", state="C", max_current_a=16)
        tid = csms.tx_id("local")
        csms.wait(lambda: _status(csms, "cph") == "Charging", 20)
        boots = b.boots
        assert csms.call("cph", call.Reset(type="Hard")).status == "Accepted"
        b.wait_boots(boots + 1, 30)
        sp = csms.wait(lambda: csms.calls("StopTransaction", "cph"), 30)
        csms.wait(lambda: len(csms.calls("BootNotification", "cph")) >= 2, 30)
        assert [(s["transactionId"], s["reason"]) for s in sp] == [(tid, "HardReset")]
        # after the reboot the vehicle (still plugged) starts a new session
        tid2 = csms.wait(lambda: [t for (c, _, t) in csms.started if c == "cph" and t != tid], 30)[0]
        boots = b.boots
        assert csms.call("cph", call.Reset(type="Soft")).status == "Accepted"
        b.wait_boots(boots + 1, 30)
        csms.wait(lambda: len(csms.calls("BootNotification", "cph")) >= 3, 30)
        sp = csms.wait(lambda: [s for s in csms.calls("StopTransaction", "cph")
                                if s["transactionId"] == tid2], 30)
        assert sp[0]["reason"] == "SoftReset"
        time.sleep(1)
        stops = [s["transactionId"] for s in csms.calls("StopTransaction", "cph")]
        assert len(stops) == len(set(stops)), "no StopTransaction twice"
    finally:
        b.stop()


def test_offline_transactions_and_reboot_delivered_in_order_once(tmp_path, csms):
    b = _board(tmp_path, csms, "cpo")
    try:
        csms.wait(lambda: _status(csms, "cpo") == "Available", 30)
        b.control("plug", state="C", max_current_a=16)
        tid1 = csms.tx_id("local")
        csms.wait(lambda: _status(csms, "cpo") == "Charging", 20)
        csms.stop()                                    # CSMS killed mid-transaction
        b.wait_for(lambda: b.get()["ocpp"] in ("offline", "connecting"), 15, what="link down")
        e = b.get()["energy_wh"]
        b.wait_for(lambda: b.get()["energy_wh"] > e + 10, 20, what="charging on offline")
        b.control("unplug")                            # Stop queued offline
        b.wait_for({"session_active": False}, 10)
        b.control("plug", state="C", max_current_a=16)  # a session started offline
        b.wait_for(lambda: b.get()["relay"], 15, what="offline session charging")
        boots = b.boots
        b.power_cycle()                                # reboot while offline, mid-session
        b.wait_boots(boots + 1, 30)
        b.wait_for(lambda: b.get()["relay"], 20, what="charging after the power cut")
        csms.start()                                   # the CSMS is back (same port)
        csms.wait(lambda: len(csms.calls("StartTransaction", "cpo")) >= 3, 60, "queued Starts")
        csms.wait(lambda: len(csms.calls("StopTransaction", "cpo")) >= 2, 30, "queued Stops")
        csms.wait(lambda: len([1 for (c, _, _) in csms.started if c == "cpo"]) >= 3, 10)
        time.sleep(1)   # a duplicate would arrive now
        starts = csms.calls("StartTransaction", "cpo")
        stops = csms.calls("StopTransaction", "cpo")
        ids = [t for (c, _, t) in csms.started if c == "cpo"]
        assert len(starts) == 3 and len(ids) == 3, "each Start exactly once: %s" % starts
        assert ids[0] == tid1
        assert [(s["transactionId"], s["reason"]) for s in stops] == [
            (tid1, "EVDisconnected"), (ids[1], "PowerLoss")]
        # in order: Stop(1) before Start(2) before Stop(2) before Start(3)
        tx = [(a, p.get("transactionId")) for a, p in zip(csms.actions("cpo"), csms.calls(cid="cpo"))
              if a in ("StartTransaction", "StopTransaction")]
        assert tx == [("StartTransaction", None), ("StopTransaction", tid1), ("StartTransaction", None),
                      ("StopTransaction", ids[1]), ("StartTransaction", None)]
        assert starts[1]["meterStart"] <= stops[1]["meterStop"] <= starts[2]["meterStart"]
        assert stops[0]["meterStop"] <= starts[1]["meterStart"]
        # and only one BootNotification per boot reached this CSMS instance
        csms.wait(lambda: _status(csms, "cpo") == "Charging", 20)
    finally:
        b.stop()
