"""`make demo BACKEND=ocpp` (tools/demo_ocpp.py): two virtual boards run by the
`ocpp` CSMS through remote start, a charging profile, a CSMS outage with an
offline Stop, and a firmware update; every message schema-valid."""
from tools import demo_ocpp


def test_demo_over_ocpp(tmp_path):
    r = demo_ocpp.run(str(tmp_path / "demo"))
    assert r["errors"] == []
    assert r["versions"] == {"cp-1": "0.2.0", "cp-2": "0.1.0"}
    log = r["log"]
    assert ("cp-2", "StopTransaction") in log and ("cp-1", "FirmwareStatusNotification") in log
    assert r["ok"]
