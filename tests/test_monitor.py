"""`evsectl monitor` (tools/monitor.py): the table from retained payloads, and
--once against a real broker (mosquitto, else amqtt) with stand-in devices (tools/fleet.py)."""
import json

import pytest

from tests.prep import broker as B
from tools import fleet as fleetmod
from tools import monitor


@pytest.fixture(scope="module")
def mq(tmp_path_factory):
    br = B.Broker(str(tmp_path_factory.mktemp("broker")))
    br.start()
    yield {"port": br.port,
           "url": "mqtt://%s:%s@127.0.0.1:%d" % (B.BACKEND_USER, B.BACKEND_PASSWORD, br.port)}
    br.stop()


@pytest.fixture
def fleets(mq):
    made = []

    def make(prefix, n, behaviours=None, version="1.0.0"):
        ids = ["%s-%02d" % (prefix, i) for i in range(n)]
        beh = {ids[i]: b for i, b in (behaviours or {}).items()}
        f = fleetmod.Fleet("127.0.0.1", mq["port"], ids, beh, version=version, user=B.USER,
                           password=B.PASSWORD).start()
        made.append(f)
        return f, ids
    yield make
    for f in made:
        f.stop()


def test_rows_from_payloads():
    f = monitor.Fleet()
    f.apply("evse/b/status", b'{"online": true, "version": "1.1.0", "slot": "B", "trial": true}')
    f.apply("evse/b/firmware", b'{"status": "Downloading", "requestId": 3, "progress": 40, "reason": null}')
    f.apply("evse/b/state", b'{"state": "C", "relay": true, "current_a": 16, "fault": null, '
                            b'"session": {"id": 1, "energy_wh": 1520}}')
    f.apply("evse/a/status", b'{"online": false}')
    f.apply("evse/c/status", b'{"online": true, "version": "1.0.0", "slot": "A", "failed_version": "1.1.0"}')
    f.apply("evse/c/firmware", b'{"status": "InstallationFailed", "reason": "trials_exhausted (version 1.1.0)"}')
    f.apply("evse/c/telemetry", b'{"power_w": 1}')     # not shown
    f.apply("evse/d/status", b'not json')              # ignored
    f.apply("other/x/status", b'{"online": true}')     # not a device topic
    rows = f.rows()
    assert [r["device"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["online"] == "no" and rows[0]["version"] == "-"
    assert rows[1] == {"device": "b", "online": "yes", "version": "1.1.0", "slot": "B (trial)",
                       "state": "C 16A", "session": "1520 Wh", "firmware": "Downloading 40%"}
    assert rows[2]["version"] == "1.0.0 (1.1.0 failed)"
    assert rows[2]["firmware"] == "InstallationFailed (trials_exhausted (version 1.1.0))"
    lines = monitor.table(rows)
    assert lines[-1] == "3 devices, 2 online; versions: - 1, 1.0.0 1, 1.1.0 1"
    assert [r["device"] for r in f.rows(monitor.rollout.parse_filter("online=true,version>=1.1.0"))] == ["b"]


def test_session_energy_is_live_and_offline_devices_keep_their_version():
    f = monitor.Fleet()
    f.apply("evse/s/status", b'{"online": true, "version": "1.1.0", "slot": "b", "trial": false}')
    f.apply("evse/s/state", b'{"state": "C", "relay": true, "current_a": 16, "fault": null, '
                            b'"session": {"id": 4, "energy_wh": 0.0}}')   # as of the session start
    assert f.rows()[0]["session"] == "0.0 Wh" and f.stale_sessions() == ["s"]
    f.apply("evse/s/telemetry", b'{"energy_wh": 12335.0, "session_wh": 335.04}')
    assert f.rows()[0]["session"] == "335.0 Wh" and f.stale_sessions() == []
    f.apply("evse/s/status", b'{"online": false}')                    # an old-style will
    r = f.rows()[0]
    assert (r["online"], r["version"], r["slot"]) == ("no", "1.1.0", "b")


def test_a_virtual_board_charging_shows_its_session_energy_and_offline_version(mq, tmp_path, capsys):
    from tools.vboard import VBoard
    b = VBoard(str(tmp_path / "vbmon"), id="vbmon", broker="127.0.0.1:%d" % mq["port"],
               config={"telemetry_ms": 1000, "mqtt": {"user": B.USER, "password": B.PASSWORD}}).start()
    try:
        b.wait_output("agent: vbmon", 30)
        b.control("plug", state="C", max_current_a=16)
        b.wait_for(lambda: (b.get()["session"] or {}).get("energy_wh", 0) > 1.0, 30, what="energy in the session")
        assert monitor.main(["--mqtt", mq["url"], "--once", "--json", "--filter", "id=vbmon"]) == 0
        row = json.loads(capsys.readouterr().out)[0]
        wh = float(row["session"].split()[0])
        assert row["online"] == "yes" and wh > 1.0, row        # not the 0.0 of the session start
        assert wh <= b.get()["session"]["energy_wh"] + 0.1
    finally:
        b.stop()          # killed: the broker publishes its will
    for _ in range(50):
        assert monitor.main(["--mqtt", mq["url"], "--once", "--json", "--filter", "id=vbmon",
                             "--wait", "0.5"]) == 0
        row = json.loads(capsys.readouterr().out)[0]
        if row["online"] == "no":
            break
    assert (row["online"], row["version"], row["slot"]) == ("no", "0.1.0", "a")


def test_monitor_once_shows_the_fleet(mq, fleets, capsys):
    f, ids = fleets("mon", 3)
    assert monitor.main(["--mqtt", mq["url"], "--once", "--filter", "id=mon-*", "--wait", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["DEVICE", "ONLINE", "VERSION", "SLOT", "STATE", "SESSION", "FIRMWARE"]
    rows = [ln.split() for ln in out[1:4]]
    assert [r[0] for r in rows] == ids
    assert all(r[1:5] == ["yes", "1.0.0", "A", "A"] and r[-1] == "Idle" for r in rows)
    assert out[4].startswith("3 devices, 3 online")
    f.call(f.devices[ids[1]].reboot)       # a live change shows in the next snapshot
    assert monitor.main(["--mqtt", mq["url"], "--once", "--json", "--filter", "id=mon-01"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"device": "mon-01", "online": "yes", "version": "1.0.0", "slot": "A", "state": "A",
                     "session": "-", "firmware": "Idle"}]
    assert monitor.main(["--mqtt", mq["url"], "--once", "--filter", "board=sim"]) == 2
    assert "board" in capsys.readouterr().err
    assert monitor.main(["--mqtt", "mqtt://127.0.0.1:1", "--once"]) == 1
    assert "cannot reach" in capsys.readouterr().err
