"""Staged rollout (tools/rollout.py) end to end: a real broker (mosquitto, else amqtt), stand-in
devices from tools/fleet.py (one MQTT connection each), the controller
in-process or as a subprocess that gets killed. Conditions are waited for
with timeouts; nothing is timed."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.prep import broker as B
from tools import fleet as fleetmod
from tools import rollout, rolloutdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mq(tmp_path_factory):
    d = tmp_path_factory.mktemp("broker")
    br = B.Broker(str(d))
    br.start()
    yield {"port": br.port,
           "url": "mqtt://%s:%s@127.0.0.1:%d" % (B.BACKEND_USER, B.BACKEND_PASSWORD, br.port)}
    br.stop()


@pytest.fixture
def fleets(mq):
    made = []

    def make(prefix, n, behaviours=None, version="1.0.0", **kw):
        ids = ["%s-%02d" % (prefix, i) for i in range(n)]
        beh = {ids[i]: b for i, b in (behaviours or {}).items()}
        f = fleetmod.Fleet("127.0.0.1", mq["port"], ids, beh, version=version, user=B.USER,
                           password=B.PASSWORD, **kw).start()
        made.append(f)
        return f, ids
    yield make
    for f in made:
        f.stop()


@pytest.fixture
def rel(tmp_path):
    img = tmp_path / "evse-sim-1.1.0.img"
    img.write_bytes(b"not really an image" * 10)
    p = tmp_path / "evse-sim-1.1.0.json"
    p.write_text(json.dumps({"version": "1.1.0", "board": "sim", "image": img.name, "size": img.stat().st_size,
                             "sha256": hashlib.sha256(img.read_bytes()).hexdigest()}))
    return str(p)


def wait_for(cond, timeout=20.0, what="condition"):
    t_end = time.time() + timeout
    while time.time() < t_end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def ro(tmp_path, mq, *args):
    return rollout.main(["--db", str(tmp_path / "ro.db")] + list(args))


def start_args(mq, rel, ids, *extra):
    return ["start", "--release", rel, "--base-url", "http://127.0.0.1:9/fw/", "--targets", ",".join(ids),
            "--mqtt", mq["url"], "--progress", "lines", "--ack-timeout", "5", "--device-timeout", "20"] + list(extra)


def in_thread(fn, *args):
    box = {}

    def run():
        box["rc"] = fn(*args)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def db_of(tmp_path):
    return rolloutdb.RolloutDB(str(tmp_path / "ro.db"))


# ---- the tests -----------------------------------------------------------------------------

def test_canary_then_waves_in_order_and_report(tmp_path, mq, fleets, rel, capsys):
    f, ids = fleets("cw", 10)
    rc = ro(tmp_path, mq, *start_args(mq, rel, ids, "--canary", "1", "--waves", "30%,100%",
                                      "--report-dir", str(tmp_path)))
    assert rc == 0
    db = db_of(tmp_path)
    devs = db.devices(1)
    assert [d["wave"] for d in devs] == [0, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert all(d["state"] == "installed" for d in devs)
    for w in (0, 1):   # success threshold 100 %: a group starts after the one before is all Installed
        done = max(d["finished_at"] for d in devs if d["wave"] == w)
        assert all(d["sent_at"] >= done for d in devs if d["wave"] == w + 1)
    st = f.stats()
    assert set(st["update_cmds"].values()) == {1} and set(st["versions"].values()) == {"1.1.0"}
    cmd = f.devices[ids[0]].update_cmds[0]
    assert cmd["firmware"]["location"] == "http://127.0.0.1:9/fw/evse-sim-1.1.0.img"
    assert cmd["requestId"] == devs[0]["request_id"] and "retrieveDateTime" in cmd["firmware"]
    out = capsys.readouterr().out
    assert "canary" in out and "wave 2 opens" in out and "Installed" in out
    rep = json.load(open(tmp_path / "rollout-1.json"))
    assert rep["counts"] == {"installed": 10} and rep["timeline"][-1][2] == 10
    html = (tmp_path / "rollout-1.html").read_text()
    assert "<svg" in html and "<script" not in html and "http://" not in html.split("<svg", 1)[1].split(">")[0] \
        .replace("http://www.w3.org/2000/svg", "")


def test_success_threshold_gates_and_rollback_counts_failed(tmp_path, mq, fleets, rel):
    f, ids = fleets("st", 6, {1: {"outcome": "rollback", "reason": "cp_selftest_failed"}})
    rc = ro(tmp_path, mq, *start_args(mq, rel, ids, "--canary", "2", "--success-threshold", "100%",
                                      "--error-threshold", "60%", "--report-dir", str(tmp_path)))
    assert rc == 3
    db = db_of(tmp_path)
    r = db.get(1)
    assert r["state"] == "stopped" and "success threshold" in r["reason"]
    devs = {d["device"]: d for d in db.devices(1)}
    bad = devs[ids[1]]
    assert bad["state"] == "failed"
    assert bad["reason"] == "InstallationFailed: cp_selftest_failed (version 1.1.0)"
    assert devs[ids[0]]["state"] == "installed"
    st = f.stats()["update_cmds"]
    assert [st[i] for i in ids] == [1, 1, 0, 0, 0, 0]       # wave 1 never started
    assert all(devs[i]["state"] == "skipped" for i in ids[2:])
    assert f.devices[ids[1]].version == "1.0.0" and f.devices[ids[1]].failed_version == "1.1.0"


def test_error_threshold_stops_new_starts_running_ones_finish(tmp_path, mq, fleets, rel):
    beh = {0: {"outcome": "fail", "fail_status": "DownloadFailed"},
           1: {"outcome": "fail", "fail_status": "InvalidSignature"},
           2: {"download_s": 1.0}, 3: {"download_s": 1.0}}
    f, ids = fleets("et", 10, beh)
    rc = ro(tmp_path, mq, *start_args(mq, rel, ids, "--max-concurrent", "4", "--error-threshold", "10%",
                                      "--success-threshold", "0%", "--report-dir", str(tmp_path)))
    assert rc == 3
    db = db_of(tmp_path)
    r = db.get(1)
    assert r["state"] == "stopped" and "error threshold" in r["reason"]
    devs = {d["device"]: d for d in db.devices(1)}
    assert devs[ids[0]]["reason"] == "DownloadFailed: download: http"
    assert devs[ids[1]]["reason"].startswith("InvalidSignature")
    # the slow ones were running when the threshold was hit, and finished
    assert devs[ids[2]]["state"] == devs[ids[3]]["state"] == "installed"
    ev = db.events(1)
    t_stop = min(e["t"] for e in ev if e["kind"] == "stopping")
    assert t_stop < devs[ids[2]]["finished_at"] and t_stop < devs[ids[3]]["finished_at"]
    assert not [e for e in ev if e["kind"] in ("sent", "config") and e["t"] > t_stop]
    skipped = [i for i in ids if devs[i]["state"] == "skipped"]
    assert len(skipped) >= 4
    st = f.stats()["update_cmds"]
    assert all(st[i] == 0 for i in skipped)
    assert r["finished"] >= max(devs[ids[2]]["finished_at"], devs[ids[3]]["finished_at"])


def test_max_concurrent_downloads(tmp_path, mq, fleets, rel):
    f, ids = fleets("mc", 12, {i: {"download_s": 0.2} for i in range(12)})
    assert ro(tmp_path, mq, *start_args(mq, rel, ids, "--max-concurrent", "3",
                                        "--report-dir", str(tmp_path))) == 0
    assert f.max_downloading == 3          # reached, never passed
    assert set(f.stats()["update_cmds"].values()) == {1}


def test_pause_resume_by_command(tmp_path, mq, fleets, rel):
    f, ids = fleets("pr", 8, {i: {"download_s": 0.3} for i in range(8)})
    t, box = in_thread(ro, tmp_path, mq, *start_args(mq, rel, ids, "--max-concurrent", "2",
                                                     "--report-dir", str(tmp_path)))
    db = db_of(tmp_path)
    wait_for(lambda: sum(f.stats()["update_cmds"].values()) >= 2, what="first commands")
    assert ro(tmp_path, mq, "pause", "1") == 0
    # the controller sees it, lets the running devices finish, then starts nothing
    wait_for(lambda: not ({"sent", "config"} & set(db.counts(1))), what="running devices to finish")
    hb = db.get(1)["heartbeat"]
    wait_for(lambda: db.get(1)["heartbeat"] > hb + 0.4, what="controller ticking while paused")
    sent = sum(f.stats()["update_cmds"].values())
    assert 2 <= sent < 8 and db.counts(1).get("pending", 0) == 8 - sent
    assert db.get(1)["state"] == "paused"
    assert ro(tmp_path, mq, "pause", "1") == 2      # already paused: refused, nothing changes
    assert ro(tmp_path, mq, "resume", "1") == 0     # the live controller picks it up
    t.join(30)
    assert box["rc"] == 0
    assert set(f.stats()["update_cmds"].values()) == {1}
    assert db.counts(1) == {"installed": 8}


def test_abort_and_final_states_refuse_commands(tmp_path, mq, fleets, rel, capsys):
    f, ids = fleets("ab", 6, {i: {"download_s": 0.5} for i in range(6)})
    t, box = in_thread(ro, tmp_path, mq, *start_args(mq, rel, ids, "--max-concurrent", "1",
                                                     "--report-dir", str(tmp_path)))
    wait_for(lambda: sum(f.stats()["update_cmds"].values()) >= 1, what="first command")
    assert ro(tmp_path, mq, "abort", "1", "--reason", "bad batch") == 0
    t.join(30)
    assert box["rc"] == 4
    db = db_of(tmp_path)
    r = db.get(1)
    assert r["state"] == "aborted" and r["reason"] == "bad batch"
    sent = sum(f.stats()["update_cmds"].values())
    assert sent < 6 and db.counts(1).get("skipped") == 6 - sent
    capsys.readouterr()
    for cmd in ("resume", "pause", "abort"):
        assert ro(tmp_path, mq, cmd, "1") == 2
        assert "aborted" in capsys.readouterr().err
    assert db.get(1)["state"] == "aborted"
    assert ro(tmp_path, mq, "status", "1") == 0
    out = capsys.readouterr().out
    assert "aborted" in out and "controller: not running" in out


def test_install_window_and_date_passed_to_devices(tmp_path, mq, fleets, rel):
    now = time.gmtime()
    utc_min = now.tm_hour * 60 + now.tm_min
    inside = (120 - utc_min) % 1440        # device local time 02:00 -> inside 01:00-03:00
    outside = (720 - utc_min) % 1440       # 12:00 -> outside
    f, ids = fleets("iw", 2, {0: {"tz_min": inside}, 1: {"tz_min": outside}})
    rc = ro(tmp_path, mq, *start_args(mq, rel, ids, "--install-window", "01:00-03:00",
                                      "--install-at", "2020-01-01T03:00:00+02:00", "--schedule-timeout", "1",
                                      "--error-threshold", "50%", "--success-threshold", "50%",
                                      "--report-dir", str(tmp_path)))
    assert rc == 0
    for i in ids:
        cmds = f.devices[i].commands
        assert [c[0] for c in cmds] == ["set_config", "update_firmware"]
        assert cmds[0][1]["changes"] == {"install_window": [60, 180]}
        assert cmds[1][1]["firmware"]["installDateTime"] == "2020-01-01T01:00:00Z"
    devs = {d["device"]: d for d in db_of(tmp_path).devices(1)}
    assert devs[ids[0]]["state"] == "installed"
    assert devs[ids[1]]["state"] == "failed" and devs[ids[1]]["status"] == "InstallScheduled"
    assert "InstallScheduled" in devs[ids[1]]["reason"]


def test_session_delays_install_offline_device_times_out(tmp_path, mq, fleets, rel):
    f, ids = fleets("ss", 3, {0: {"session_s": 0.4}, 2: {"offline": True}})
    rc = ro(tmp_path, mq, *start_args(mq, rel, ids, "--error-threshold", "50%", "--success-threshold", "50%",
                                      "--report-dir", str(tmp_path), "--device-timeout", "1.5"))
    assert rc == 0
    db = db_of(tmp_path)
    devs = {d["device"]: d for d in db.devices(1)}
    assert devs[ids[0]]["state"] == "installed"
    assert "InstallScheduled" in [e["kind"] for e in db.events(1) if e["device"] == ids[0]]
    assert devs[ids[2]]["state"] == "failed" and "offline" in devs[ids[2]]["reason"]
    assert f.stats()["update_cmds"][ids[2]] == 0


def test_filter_selects_from_retained_status(tmp_path, mq, fleets, rel, capsys):
    fleets("flt", 3)
    fleets("flu", 2, version="1.1.0")
    rc = ro(tmp_path, mq, "start", "--release", rel, "--base-url", "http://h/", "--mqtt", mq["url"],
            "--filter", "id=fl*,version<1.1.0,board=sim", "--dry-run", "--discover-s", "1")
    assert rc == 0
    out = capsys.readouterr().out
    assert "plan for 3 devices" in out and "flt-00" in out and "flu-00" not in out
    assert not os.path.exists(tmp_path / "ro.db") or db_of(tmp_path).list() == []


def test_bad_input_is_refused_and_creates_nothing(tmp_path, mq, rel, capsys):
    cases = [
        (["--waves", "10%,abc"], "wave"),
        (["--install-window", "25:00-03:00"], "install window"),
        (["--success-threshold", "150%"], "success-threshold"),
        (["--install-at", "tomorrow"], "install-at"),
        (["--max-concurrent", "0"], "max-concurrent"),
    ]
    for extra, word in cases:
        rc = ro(tmp_path, mq, *start_args(mq, rel, ["x1", "x2"], *extra))
        assert rc == 2
        assert word in capsys.readouterr().err
    assert ro(tmp_path, mq, "start", "--release", str(tmp_path / "nope.json"), "--base-url", "http://h/",
              "--targets", "a", "--mqtt", mq["url"]) == 2
    assert ro(tmp_path, mq, "start", "--release", rel, "--base-url", "ftp://h/", "--targets", "a",
              "--mqtt", mq["url"]) == 2
    assert ro(tmp_path, mq, "start", "--release", rel, "--base-url", "http://h/", "--targets", "a,a",
              "--mqtt", mq["url"]) == 2
    assert "duplicate" in capsys.readouterr().err
    assert db_of(tmp_path).list() == []
    with pytest.raises(SystemExit):
        rollout.main(["start", "--help"])
    assert "--success-threshold" in capsys.readouterr().out


def test_crash_recovery_kill9_then_resume(tmp_path, mq, fleets, rel):
    n = 30
    f, ids = fleets("cr", n, {i: {"download_s": 0.25} for i in range(n)})
    dbp = str(tmp_path / "ro.db")
    args = [sys.executable, "-m", "tools.rollout", "--db", dbp] + start_args(
        mq, rel, ids, "--canary", "2", "--waves", "40%,100%", "--max-concurrent", "5",
        "--report-dir", str(tmp_path))
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        wait_for(lambda: os.path.exists(dbp) and rolloutdb.RolloutDB(dbp).counts(1).get("installed", 0) >= 8,
                 30, "the rollout to be under way")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    db = rolloutdb.RolloutDB(dbp)
    before = db.counts(1)
    assert before.get("pending", 0) > 0, before      # killed mid-way
    assert db.get(1)["state"] == "running"
    # the crash can leave a device marked sent that never got its command (the
    # DB is written before the publish): simulate that gap for two devices
    gap = [d["device"] for d in db.devices(1) if d["state"] == "pending"][:2]
    db.mark_sent(1, [(g, "sent") for g in gap])
    assert rollout.main(["--db", dbp, "resume", "1", "--progress", "none", "--report-dir",
                         str(tmp_path)]) == 0
    devs = db.devices(1)
    assert all(d["state"] == "installed" for d in devs), db.counts(1)
    st = f.stats()
    # every command a device got was recorded first (commit, then publish); a device whose
    # reply had not reached the killed controller may get its command again (same
    # requestId, accepted as the job it runs), but nothing installs twice
    sent = {d["device"]: d["cmds_sent"] for d in devs}
    assert all(1 <= st["update_cmds"][i] <= sent[i] for i in ids), (st["update_cmds"], sent)
    assert all(st["installs"][i] == 1 for i in ids)
    assert all(d["cmds_sent"] == 2 for d in devs if d["device"] in gap)
    ev = db.events(1)
    assert sum(1 for e in ev if e["kind"] == "controller") == 2


def test_pause_and_abort_without_a_controller(tmp_path, mq, fleets, rel):
    f, ids = fleets("nc", 3)
    a = rollout.build_parser().parse_args(start_args(mq, rel, ids, "--report-dir", str(tmp_path)))
    db = db_of(tmp_path)
    rid = db.create(rollout.build_params(a, len(ids)), [(i, 0) for i in ids])
    assert ro(tmp_path, mq, "pause", str(rid)) == 0           # nobody runs it: the DB alone changes
    assert db.get(rid)["state"] == "paused" and sum(f.stats()["update_cmds"].values()) == 0
    assert ro(tmp_path, mq, "resume", str(rid), "--progress", "none", "--report-dir", str(tmp_path)) == 0
    assert db.counts(rid) == {"installed": 3} and set(f.stats()["update_cmds"].values()) == {1}
    rid2 = db.create(rollout.build_params(a, len(ids)), [(i, 0) for i in ids])
    assert ro(tmp_path, mq, "abort", str(rid2)) == 0
    assert db.get(rid2)["state"] == "aborted" and db.counts(rid2) == {"skipped": 3}
    assert set(f.stats()["update_cmds"].values()) == {1}      # nothing sent for the aborted one


def test_devices_download_the_release_from_the_url(tmp_path, mq, fleets, rel):
    from tools import serve
    desc = json.load(open(rel))
    faults = serve.Faults()
    srv, port = serve.serve(str(tmp_path), faults=faults)
    try:
        f, ids = fleets("dl", 2, {0: {"fetch": True}, 1: {"fetch": True}},
                        expect={"sha256": desc["sha256"], "size": desc["size"]})
        faults.push(path="/" + desc["image"], status=404)     # one device gets a 404
        rc = ro(tmp_path, mq, *start_args(mq, rel, ids, "--error-threshold", "50%", "--success-threshold", "50%",
                                          "--report-dir", str(tmp_path),
                                          "--base-url", "http://127.0.0.1:%d/" % port))   # the last one counts
    finally:
        srv.shutdown()
        srv.server_close()
    assert rc == 0
    states = sorted((d["state"], d["reason"]) for d in db_of(tmp_path).devices(1))
    assert states == [("failed", "DownloadFailed: download: http"), ("installed", None)]
    assert sorted(s for _, _, s in faults.log) == [200, 404]


# ---- issue 14 part 5 / issue 13 item 8 -----------------------------------------------------

def test_one_active_rollout_per_device_and_a_trial_is_never_installed(tmp_path, mq, fleets, rel, capsys):
    f, ids = fleets("ov", 3, {0: {"trial_s": 2.0}})
    t, box = in_thread(ro, tmp_path, mq, *start_args(mq, rel, ids, "--canary", "1", "--report-dir",
                                                     str(tmp_path)))
    wait_for(lambda: f.devices[ids[0]].trial, 20, "the canary on trial")
    # a second rollout for the same devices while the canary is on trial: refused, nothing sent
    assert ro(tmp_path, mq, *start_args(mq, rel, ids)) == 2
    assert "already in an active rollout" in capsys.readouterr().err
    assert len(db_of(tmp_path).list()) == 1
    assert sum(f.stats()["update_cmds"].values()) == 1          # only the canary got its command
    # with the explicit override, a device on trial is not counted as already installed
    assert ro(tmp_path, mq, *start_args(mq, rel, ids[:1], "--allow-overlap", "--report-dir",
                                        str(tmp_path))) == 0
    t.join(60)
    assert box["rc"] == 0
    db = db_of(tmp_path)
    first = {d["device"]: d for d in db.devices(1)}
    second = db.devices(2)[0]
    assert second["state"] == "installed" and second["reason"] == "already on 1.1.0"
    # only once the 2 s trial was over (its status trial false), not while it ran
    assert second["finished_at"] >= first[ids[0]]["sent_at"] + 2.0
    assert f.stats()["update_cmds"][ids[0]] == 1


def test_a_device_that_claims_installed_but_boots_the_old_version_failed(tmp_path, mq, fleets, rel):
    f, ids = fleets("li", 2, {0: {"outcome": "liar"}})
    rc = ro(tmp_path, mq, *start_args(mq, rel, ids, "--error-threshold", "50%", "--success-threshold", "50%",
                                      "--report-dir", str(tmp_path)))
    assert rc == 0
    devs = {d["device"]: d for d in db_of(tmp_path).devices(1)}
    assert f.devices[ids[0]].fw["status"] == "Installed"          # what it claimed
    assert devs[ids[0]]["state"] == "failed"
    assert "reported Installed but boots 1.0.0 on slot a" in devs[ids[0]]["reason"]
    assert devs[ids[1]]["state"] == "installed"


def test_start_with_the_broker_down_leaves_no_running_rollout(tmp_path, rel, capsys):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                                       # nobody listens there
    rc = rollout.main(["--db", str(tmp_path / "ro.db"), "start", "--release", rel, "--base-url",
                       "http://127.0.0.1:9/", "--targets", "a,b", "--mqtt", "mqtt://127.0.0.1:%d" % port])
    assert rc == 1 and "broker" in capsys.readouterr().err
    assert db_of(tmp_path).list() == []
