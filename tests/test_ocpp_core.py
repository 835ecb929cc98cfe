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


@pytest.fixture(scope="module")
def csms():
    cs = CSMS(interval=2).start()
    yield cs
    cs.stop()
    assert cs.errors == [], "schema violations / protocol errors: %s" % cs.errors


@pytest.fixture(scope="module")
def board(tmp_path_factory, csms):
    b = _board(tmp_path_factory.mktemp("ocpp"), csms)
    csms.wait(lambda: csms.calls("StatusNotification", "cp1"), 30, "the board registered")
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def no_schema_errors(csms):
    yield
    assert csms.errors == [], "schema violations / protocol errors: %s" % csms.errors


def _status(cs, cid, connector=1):
    s = [p for p in cs.calls("StatusNotification", cid) if p["connectorId"] == connector]
    return s[-1]["status"] if s else None


def _idle(b, cs):
    b.control("unplug")
    cs.wait(lambda: _status(cs, "cp1") == "Available", 20)


def test_TC_001_cold_boot_accepted(board, csms):
    boot = csms.wait(lambda: csms.calls("BootNotification", "cp1"), 30)[0]
    assert boot["chargePointVendor"] and boot["chargePointModel"]
    assert boot["firmwareVersion"] == board.get()["version"]
    csms.wait(lambda: _status(csms, "cp1", 0) == "Available" and _status(csms, "cp1") == "Available")
    # heartbeats at the interval the CSMS gave (2 s)
    csms.wait(lambda: len(csms.calls("Heartbeat", "cp1")) >= 2, 15, "heartbeats")
    conn = csms.connects[0]
    assert conn[1] == "cp1" and conn[2] == "ocpp1.6"
    assert board.get()["ocpp"] == "accepted"
    assert csms.actions("cp1")[0] == "BootNotification"


def test_TC_003_regular_charging_session_plugin_first(board, csms):
    csms.auth["TAG1"] = "Accepted"
    b = board
    n0 = len(csms.calls("StartTransaction", "cp1"))
    assert csms.call("cp1", call.ChangeConfiguration(key="MeterValueSampleInterval", value="1")).status \
        == "Accepted"
    b.control("plug", state="B", max_current_a=16)
    csms.wait(lambda: _status(csms, "cp1") == "Preparing")
    b.control("tag", tag="TAG1")
    csms.wait(lambda: csms.calls("Authorize", "cp1"))
    st = csms.wait(lambda: csms.calls("StartTransaction", "cp1")[n0:])[0]
    assert st["idTag"] == "TAG1" and st["connectorId"] == 1
    b.control("ev_state", state="C")
    csms.wait(lambda: _status(csms, "cp1") == "Charging", 20)
    b.wait_for(lambda: b.get()["energy_wh"] > st["meterStart"] + 20, 20, what="energy")
    tid = csms.tx_id("TAG1")
    mv = csms.wait(lambda: [m for m in csms.calls("MeterValues", "cp1") if "transactionId" in m])
    assert mv[0]["transactionId"] == tid
    names = [s["measurand"] for s in mv[-1]["meterValue"][0]["sampledValue"]]
    assert names == ["Energy.Active.Import.Register", "Power.Active.Import"]
    b.control("unplug")
    sp = csms.wait(lambda: csms.calls("StopTransaction", "cp1"))[-1]
    assert sp["transactionId"] == tid and sp["reason"] == "EVDisconnected" and sp["idTag"] == "TAG1"
    assert sp["meterStop"] >= st["meterStart"] + 20
    csms.wait(lambda: _status(csms, "cp1") == "Available")
    seq = [s["status"] for s in csms.calls("StatusNotification", "cp1") if s["connectorId"] == 1]
    assert "Preparing" in seq and "Charging" in seq
    assert csms.call("cp1", call.ChangeConfiguration(key="MeterValueSampleInterval", value="0")).status \
        == "Accepted"


def test_TC_004_authorize_invalid_tag_does_not_start(board, csms):
    n0 = len(csms.calls("StartTransaction", "cp1"))
    board.control("plug", state="C", max_current_a=16)
    board.control("tag", tag="NOPE")
    csms.wait(lambda: [a for a in csms.calls("Authorize", "cp1") if a["idTag"] == "NOPE"])
    csms.wait(lambda: _status(csms, "cp1") == "Preparing")
    assert board.get()["session"] is None
    assert len(csms.calls("StartTransaction", "cp1")) == n0
    _idle(board, csms)


def test_TC_010_remote_start_and_TC_012_remote_stop(board, csms):
    b = board
    n0 = len(csms.calls("StartTransaction", "cp1"))
    b.control("plug", state="C", max_current_a=16)
    r = csms.call("cp1", call.RemoteStartTransaction(id_tag="REMOTE1"))
    assert r.status == "Accepted"
    st = csms.wait(lambda: csms.calls("StartTransaction", "cp1")[n0:])[0]
    assert st["idTag"] == "REMOTE1"
    tid = csms.tx_id("REMOTE1")
    csms.wait(lambda: _status(csms, "cp1") == "Charging", 20)
    assert csms.call("cp1", call.RemoteStartTransaction(id_tag="X")).status == "Rejected"
    assert csms.call("cp1", call.RemoteStopTransaction(transaction_id=999)).status == "Rejected"
    assert csms.call("cp1", call.RemoteStopTransaction(transaction_id=tid)).status == "Accepted"
    sp = csms.wait(lambda: [s for s in csms.calls("StopTransaction", "cp1") if s["transactionId"] == tid])[0]
    assert sp["reason"] == "Remote"
    csms.wait(lambda: _status(csms, "cp1") == "Finishing")
    b.wait_for({"relay": False}, 10)
    _idle(b, csms)


def test_TC_018_unlock_connector_not_supported_on_a_tethered_cable(board, csms):
    assert csms.call("cp1", call.UnlockConnector(connector_id=1)).status == "NotSupported"


def test_TC_019_retrieve_configuration_and_TC_021_change_it(board, csms):
    r = csms.call("cp1", call.GetConfiguration())
    keys = {k["key"]: k for k in r.configuration_key}
    assert keys["HeartbeatInterval"]["value"] == "2"       # from the BootNotification answer
    assert keys["NumberOfConnectors"] == {"key": "NumberOfConnectors", "readonly": True, "value": "1"}
    r = csms.call("cp1", call.GetConfiguration(key=["HeartbeatInterval", "NoSuchKey"]))
    assert [k["key"] for k in r.configuration_key] == ["HeartbeatInterval"]
    assert r.unknown_key == ["NoSuchKey"]
    assert csms.call("cp1", call.ChangeConfiguration(key="NumberOfConnectors", value="2")).status == "Rejected"
    assert csms.call("cp1", call.ChangeConfiguration(key="NoSuchKey", value="1")).status == "NotSupported"
    assert csms.call("cp1", call.ChangeConfiguration(key="HeartbeatInterval", value="x")).status == "Rejected"
    assert csms.call("cp1", call.ChangeConfiguration(key="MeterValuesSampledData",
                                                     value="Voltage,Bogus")).status == "Rejected"
    assert csms.call("cp1", call.ChangeConfiguration(key="HeartbeatInterval", value="1")).status == "Accepted"
    n = len(csms.calls("Heartbeat", "cp1"))
    csms.wait(lambda: len(csms.calls("Heartbeat", "cp1")) >= n + 2, 10)
    r = csms.call("cp1", call.GetConfiguration(key=["HeartbeatInterval"]))
    assert r.configuration_key[0]["value"] == "1"


def test_TC_014_change_availability_inoperative_and_operative(board, csms):
    r = csms.call("cp1", call.ChangeAvailability(connector_id=0, type="Inoperative"))
    assert r.status == "Accepted"
    csms.wait(lambda: _status(csms, "cp1", 0) == "Unavailable" and _status(csms, "cp1") == "Unavailable")
    n0 = len(csms.calls("StartTransaction", "cp1"))
    board.control("plug", state="C", max_current_a=16)
    assert csms.call("cp1", call.RemoteStartTransaction(id_tag="R2")).status == "Rejected"
    board.wait_for(lambda: board.get()["ticks"] > 0, 5)
    g = board.get()
    assert g["relay"] is False and g["offered_a"] == 0
    assert len(csms.calls("StartTransaction", "cp1")) == n0
    assert csms.call("cp1", call.ChangeAvailability(connector_id=2, type="Operative")).status == "Rejected"
    r = csms.call("cp1", call.ChangeAvailability(connector_id=1, type="Operative"))
    assert r.status == "Accepted"
    csms.wait(lambda: _status(csms, "cp1") == "Preparing")
    _idle(board, csms)


def test_TC_054_trigger_message(board, csms):
    n = len(csms.calls("StatusNotification", "cp1"))
    r = csms.call("cp1", call.TriggerMessage(requested_message="StatusNotification", connector_id=1))
    assert r.status == "Accepted"
    csms.wait(lambda: len(csms.calls("StatusNotification", "cp1")) > n)
    n = len(csms.calls("Heartbeat", "cp1"))
    assert csms.call("cp1", call.TriggerMessage(requested_message="Heartbeat")).status == "Accepted"
    csms.wait(lambda: len(csms.calls("Heartbeat", "cp1")) > n)
    n = len(csms.calls("MeterValues", "cp1"))
    assert csms.call("cp1", call.TriggerMessage(requested_message="MeterValues")).status == "Accepted"
    csms.wait(lambda: len(csms.calls("MeterValues", "cp1")) > n)
    r = csms.call("cp1", call.TriggerMessage(requested_message="DiagnosticsStatusNotification"))
    assert r.status == "NotImplemented"
    n = len(csms.calls("BootNotification", "cp1"))
    assert csms.call("cp1", call.TriggerMessage(requested_message="BootNotification")).status == "Accepted"
    csms.wait(lambda: len(csms.calls("BootNotification", "cp1")) > n)


def test_extended_trigger_message(board, csms):
    n = len(csms.calls("SignedFirmwareStatusNotification", "cp1"))
    r = csms.call("cp1", call.ExtendedTriggerMessage(requested_message="FirmwareStatusNotification"))
    assert r.status == "Accepted"
    s = csms.wait(lambda: csms.calls("SignedFirmwareStatusNotification", "cp1")[n:])[0]
    assert s == {"status": "Idle"}
    n = len(csms.calls("Heartbeat", "cp1"))
    assert csms.call("cp1", call.ExtendedTriggerMessage(requested_message="Heartbeat")).status == "Accepted"
    csms.wait(lambda: len(csms.calls("Heartbeat", "cp1")) > n)
    r = csms.call("cp1", call.ExtendedTriggerMessage(requested_message="LogStatusNotification"))
    assert r.status == "NotImplemented"


def test_rpc_errors_unknown_action_and_bad_payloads(board, csms):
    r = csms.raw("cp1", [2, "u1", "GetLocalListVersion", {}])
    assert r[:3] == [4, "u1", "NotImplemented"]
    r = csms.raw("cp1", [2, "u2", "Reset", {"type": "Sideways"}])
    assert r[:3] == [4, "u2", "PropertyConstraintViolation"]
    r = csms.raw("cp1", [2, "u3", "Reset", {}])
    assert r[:3] == [4, "u3", "OccurenceConstraintViolation"]
    r = csms.raw("cp1", [2, "u4", "RemoteStopTransaction", {"transactionId": "7"}])
    assert r[:3] == [4, "u4", "TypeConstraintViolation"]
    r = csms.raw("cp1", [2, "u5", "UnlockConnector", {"connectorId": 1, "extra": 1}])
    assert r[:3] == [4, "u5", "FormatViolation"]
    r = csms.raw("cp1", [2, "u6", "Reset", []])
    assert r[:3] == [4, "u6", "FormatViolation"]
    assert board.get()["ocpp"] == "accepted"


def test_transaction_message_attempts_and_retry_interval(board, csms):
    for k, v in (("TransactionMessageAttempts", "2"), ("TransactionMessageRetryInterval", "1")):
        assert csms.call("cp1", call.ChangeConfiguration(key=k, value=v)).status == "Accepted"
    b = board

    def session(tag):
        b.control("plug", state="C", max_current_a=16)
        assert csms.call("cp1", call.RemoteStartTransaction(id_tag=tag)).status == "Accepted"
        tid = csms.tx_id(tag)
        b.control("unplug")
        return tid

    n = len(csms.calls("StopTransaction", "cp1"))
    csms.fail_stops = 1                       # first attempt refused, the retry is accepted
    tid = session("RETRY1")
    csms.wait(lambda: len(csms.calls("StopTransaction", "cp1")) >= n + 2, 20, "Stop retried")
    assert [s["transactionId"] for s in csms.calls("StopTransaction", "cp1")[n:]] == [tid, tid]
    n += 2
    csms.fail_stops = 5                       # refused every time: given up after 2 attempts
    tid = session("RETRY2")
    csms.wait(lambda: len(csms.calls("StopTransaction", "cp1")) >= n + 2, 20, "Stop attempts")
    csms.fail_stops = 0
    tid3 = session("RETRY3")                  # the queue moves on
    csms.wait(lambda: [s for s in csms.calls("StopTransaction", "cp1") if s["transactionId"] == tid3], 20)
    assert [s["transactionId"] for s in csms.calls("StopTransaction", "cp1")[n:]] == [tid, tid, tid3]
    _idle(b, csms)


def test_latched_weld_fault_is_reported_and_no_remote_message_clears_it(board, csms):
    # last in this module: the board keeps the latched fault
    b = board
    b.control("plug", state="C", max_current_a=16)
    assert csms.call("cp1", call.RemoteStartTransaction(id_tag="R8")).status == "Accepted"
    b.wait_for(lambda: b.get()["relay"], 20, what="charging")
    b.control("weld")
    b.control("unplug")
    b.wait_for({"fault": "relay_welded"}, 10)
    st = csms.wait(lambda: [s for s in csms.calls("StatusNotification", "cp1")
                            if s["connectorId"] == 1 and s["status"] == "Faulted"])[-1]
    assert st["errorCode"] == "PowerSwitchFailure" and st["vendorErrorCode"] == "relay_welded"
    assert csms.call("cp1", call.Reset(type="Hard")).status == "Rejected"
    assert csms.call("cp1", call.Reset(type="Soft")).status == "Rejected"
    assert csms.call("cp1", call.ChangeAvailability(connector_id=0, type="Operative")).status == "Accepted"
    assert csms.call("cp1", call.RemoteStartTransaction(id_tag="R9")).status == "Rejected"
    b.control("plug", state="C", max_current_a=16)
    assert b.get()["fault"] == "relay_welded" and b.get()["offered_a"] == 0
