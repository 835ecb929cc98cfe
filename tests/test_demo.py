"""End to end, the way `make demo` runs it: release -> deploy over each virtual
board's pty with mpremote -> staged rollout (canary, waves) over a real broker
while sessions run -> one board's trial boot fails and rolls back on its own.
(Error thresholds and resume after killing the controller: tests/test_rollout.py.)"""
import json
import os
import time

import pytest

from tests.prep import broker as B
from tools import demo


@pytest.fixture
def broker(tmp_path, monkeypatch):
    """The test broker (mosquitto where installed, else amqtt: tests/prep/broker.py)."""
    d = tmp_path / "broker"
    d.mkdir()
    br = B.Broker(str(d))
    br.start()
    monkeypatch.setenv("MQTT_URL", "mqtt://%s:%s@127.0.0.1:%d" % (B.BACKEND_USER, B.BACKEND_PASSWORD, br.port))
    yield br.port
    br.stop()


def test_fleet_update_end_to_end(broker, tmp_path):
    t0 = time.time()
    res = demo.run(str(tmp_path / "demo"))
    assert res["ok"], res
    assert res["rollout_exit"] == 0
    boards = res["boards"]
    assert {n: b["version"] for n, b in boards.items()} == {
        "vb-1": "1.1.0", "vb-2": "1.1.0", "vb-3": "1.0.0", "vb-4": "1.1.0", "vb-5": "1.1.0"}
    assert boards["vb-3"]["boot_reason"].startswith("cp_selftest")
    ev = res["events"]
    # installs on charging boards waited for their sessions
    for name in demo.CHARGING:
        seq = [s for d, s in ev if d == name]
        assert "InstallScheduled" in seq and seq.index("InstallScheduled") < seq.index("InstallRebooting"), seq
        assert seq[-1] == "Installed", seq
    assert ("vb-3", "InstallationFailed") in ev
    sessions = {d for d, _ in res["sessions"]}
    assert set(demo.CHARGING) <= sessions, res["sessions"]
    report = [p for p in res["report"] if p.endswith(".json")][0]
    with open(report) as f:
        rep = json.load(f)
    assert "vb-3" in json.dumps(rep) and os.path.exists(report[:-5] + ".html")
    assert time.time() - t0 < 300
    if broker:       # $MQTT_URL, the user's broker: the demo's five devices left nothing retained
        found, c = demo._retained("127.0.0.1", broker, None, None, demo.BOARDS, wait_s=1.0)
        c.disconnect()
        c.loop_stop()
        assert found == {}
