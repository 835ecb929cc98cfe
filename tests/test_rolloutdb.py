"""The rollout state DB (tools/rolloutdb.py) and the pure option parsing of
tools/rollout.py: no broker needed."""
import os
import sqlite3
import subprocess
import sys

import pytest

from tools import rollout, rolloutdb


def params():
    return {"release": {"version": "1.1.0", "board": "sim"}, "groups": [2, 3]}


def test_create_get_devices_and_request_ids(tmp_path):
    db = rolloutdb.RolloutDB(str(tmp_path / "r.db"))
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    targets = [("d%d" % i, 0 if i < 2 else 1) for i in range(5)]
    a = db.create(params(), targets)
    with pytest.raises(ValueError, match="already in an active rollout"):
        db.create(params(), targets)                  # one active rollout per device
    b = db.create(params(), targets, allow_overlap=True)
    assert (a, b) == (1, 2)
    r = db.get(a)
    assert r["state"] == "running" and r["params"]["groups"] == [2, 3]
    devs = db.devices(a) + db.devices(b)
    assert [d["device"] for d in db.devices(a)] == ["d0", "d1", "d2", "d3", "d4"]
    rids = [d["request_id"] for d in devs]
    assert len(set(rids)) == 10 and all(0 <= x <= 2 ** 31 - 1 for x in rids)
    assert len({d["cmd_id"] for d in devs}) == 10
    # the ids stay the same when the DB is opened again (idempotent re-sends)
    db2 = rolloutdb.RolloutDB(str(tmp_path / "r.db"))
    assert [d["request_id"] for d in db2.devices(a)] == rids[:5]
    assert rolloutdb.request_id(21000, 99999, 20999) <= 2 ** 31 - 1


def test_bad_targets_change_nothing(tmp_path):
    db = rolloutdb.RolloutDB(str(tmp_path / "r.db"))
    for bad in ([], [("a", 0), ("a", 0)], [("d%d" % i, 0) for i in range(rolloutdb.MAX_TARGETS + 1)]):
        with pytest.raises(ValueError):
            db.create(params(), bad)
    assert db.list() == []
    assert db.conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 0
    with pytest.raises(ValueError):
        db.get(7)


def test_state_transitions(tmp_path):
    db = rolloutdb.RolloutDB(str(tmp_path / "r.db"))
    rid = db.create(params(), [("a", 0)])
    assert db.set_state(rid, "paused", allowed_from=("running",)) == "running"
    with pytest.raises(ValueError, match="paused"):
        db.set_state(rid, "paused", allowed_from=("running",))
    db.set_state(rid, "aborted", "operator", allowed_from=rolloutdb.ACTIVE)
    r = db.get(rid)
    assert r["state"] == "aborted" and r["reason"] == "operator" and r["finished"] is not None
    with pytest.raises(ValueError):
        db.set_state(rid, "running", allowed_from=("paused",))
    assert [e["kind"] for e in db.events(rid)] == ["created", "state", "state"]


def test_mark_sent_save_and_counts(tmp_path):
    db = rolloutdb.RolloutDB(str(tmp_path / "r.db"))
    rid = db.create(params(), [("a", 0), ("b", 0), ("c", 1)])
    db.mark_sent(rid, [("a", "sent"), ("b", "config")], now=100.0)
    db.mark_sent(rid, [("a", "sent")], now=105.0)
    d = {x["device"]: x for x in db.devices(rid)}
    assert d["a"]["cmds_sent"] == 2 and d["a"]["sent_at"] == 100.0 and d["b"]["state"] == "config"
    db.save(rid, [("a", {"state": "installed", "status": "Installed", "bogus": 1})],
            [(106.0, "a", "installed", None)])
    assert db.counts(rid) == {"installed": 1, "config": 1, "pending": 1}
    assert db.get(rid)["owner_pid"] == os.getpid()


def test_lease_of_a_dead_controller_is_free(tmp_path):
    path = str(tmp_path / "r.db")
    db = rolloutdb.RolloutDB(path)
    rid = db.create(params(), [("a", 0)])
    # another process claims it and dies (as with kill -9)
    code = ("import sys; sys.path.insert(0, %r); from tools import rolloutdb; "
            "db = rolloutdb.RolloutDB(%r); print(db.claim(%d))" % (os.getcwd(), path, rid))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert out.stdout.strip() == "True", out.stderr
    assert db.get(rid)["owner_pid"] not in (None, os.getpid())
    assert db.owner_alive(rid) is None            # its pid is gone
    assert db.claim(rid) is True
    assert db.owner_alive(rid)[0] == os.getpid()
    db.release(rid)
    assert db.owner_alive(rid) is None


def test_two_connections_see_each_others_commits(tmp_path):
    path = str(tmp_path / "r.db")
    a, b = rolloutdb.RolloutDB(path), rolloutdb.RolloutDB(path)
    rid = a.create(params(), [("x", 0)])
    b.set_state(rid, "paused", allowed_from=("running",))   # the CLI while a controller runs
    assert a.get(rid)["state"] == "paused"
    assert isinstance(a.conn, sqlite3.Connection)


# ---- option parsing (tools/rollout.py, pure) ----------------------------------------------

def test_plan_groups():
    assert rollout.plan_groups(100, "2", "10%,30%,100%") == [2, 8, 20, 70]
    assert rollout.plan_groups(10, "0", "100%") == [10]
    assert rollout.plan_groups(10, "1", "5,8") == [1, 4, 3, 2]       # the rest goes in a last wave
    assert rollout.plan_groups(3, "50%", "10%,100%") == [2, 1]       # points below the canary vanish
    assert rollout.plan_groups(7, "0", "all") == [7]
    for bad in (("x", "100%"), ("1", "10%,zz"), ("1", ""), ("-1", "100%"), ("1", "120%")):
        with pytest.raises(ValueError):
            rollout.plan_groups(10, *bad)


def test_parsers():
    assert rollout.parse_fraction("90%", "x") == 0.9 and rollout.parse_fraction("0.2", "x") == 0.2
    assert rollout.parse_window("22:00-06:00") == [1320, 360]
    assert rollout.parse_iso("2030-01-01T03:00:00+02:00", "x") == "2030-01-01T01:00:00Z"
    assert rollout.parse_version("1.2.3+4") == (1, 2, 3, 4) and rollout.parse_version("2") == (2, 0, 0, 0)
    assert rollout.parse_mqtt_url("mqtt://u:p%40ss@h:1884") == ("h", 1884, "u", "p@ss")
    for fn, arg in ((rollout.parse_window, "22-06"), (rollout.parse_window, "10:00-10:00"),
                    (rollout.parse_version, "1.x"), (rollout.parse_mqtt_url, "http://h"),
                    (rollout.parse_fraction, "abc")):
        with pytest.raises(ValueError):
            fn(arg) if fn is not rollout.parse_fraction else fn(arg, "x")
    with pytest.raises(ValueError):
        rollout.parse_iso("2030-01-01T03:00:00", "x")      # no zone: ambiguous


def test_filter():
    t = rollout.parse_filter("board=sim,version<1.1.0,id=evse-*")
    dev = {"id": "evse-1", "board": "sim", "version": "1.0.9", "online": True}
    assert rollout.match_filter(t, dev)
    assert not rollout.match_filter(t, dict(dev, version="1.1.0"))
    assert not rollout.match_filter(t, dict(dev, board="esp32"))
    assert not rollout.match_filter(t, dict(dev, version=None))
    assert rollout.match_filter(rollout.parse_filter("online=false,slot!=B"), {"online": False, "slot": "A"})
    for bad in ("colour=red", "version<abc", "board<sim", "online=maybe", "", "nonsense"):
        with pytest.raises(ValueError):
            rollout.parse_filter(bad)


def test_load_release_and_targets(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"version": "1.1.0", "board": "sim", "image": "evse sim.img"}')
    rel = rollout.load_release(str(p), "http://h:8/fw")
    assert rel["url"] == "http://h:8/fw/evse%20sim.img" and rel["version"] == "1.1.0"
    p.write_text('{"version": "1.1.0"}')
    with pytest.raises(ValueError, match="board"):
        rollout.load_release(str(p), "http://h/")
    f = tmp_path / "t.txt"
    f.write_text("a # first\n\nb\n")
    assert rollout.read_targets("@" + str(f)) == ["a", "b"]
    for bad in ("a,a", "evse/+"):
        with pytest.raises(ValueError):
            rollout.read_targets(bad)


def test_a_mistyped_db_is_not_created(tmp_path, capsys):
    typo = tmp_path / "rollots.db"
    for sub in (["status"], ["status", "1"], ["pause", "1"], ["abort", "1"], ["report", "1"]):
        assert rollout.main(["--db", str(typo)] + sub) == 2
        assert "no rollout database" in capsys.readouterr().err
    assert not typo.exists()
    # start creates the file, never missing parent directories
    deep = tmp_path / "no" / "such" / "dir" / "r.db"
    with pytest.raises(ValueError, match="does not exist"):
        rolloutdb.RolloutDB(str(deep), create=True)
    assert not (tmp_path / "no").exists()
    rolloutdb.RolloutDB(str(typo), create=True)
    assert typo.exists()
    # a file that is not a rollout database is refused, and left as it was
    for name, data in (("notes.txt", b"not a database\n"), ("empty", b"")):
        f = tmp_path / name
        f.write_bytes(data)
        assert rollout.main(["--db", str(f), "status"]) == 2
        assert "not a rollout database" in capsys.readouterr().err
        assert f.read_bytes() == data


def test_reports_of_two_databases_do_not_overwrite_each_other(tmp_path):
    from tools import report
    out = tmp_path / "build"
    a = rolloutdb.RolloutDB(str(tmp_path / "a.db"))
    (tmp_path / "other").mkdir()
    b = rolloutdb.RolloutDB(str(tmp_path / "other" / "a.db"))
    a.create(params(), [("x1", 0), ("x2", 1)])
    b.create(params(), [("y1", 0), ("y2", 1)])
    ja, _ = report.write(a, 1, str(out))
    jb, hb = report.write(b, 1, str(out))
    assert ja != jb and os.path.exists(ja) and os.path.exists(hb)
    import json
    assert [d["device"] for d in json.load(open(ja))["devices"]] == ["x1", "x2"]
    assert [d["device"] for d in json.load(open(jb))["devices"]] == ["y1", "y2"]
    assert report.write(a, 1, str(out))[0] == ja                 # the same database: the same file again
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in (ja, jb, ja[:-5] + ".html", hb))


@pytest.mark.parametrize("total", [1, 2, 3, 5, 6, 7, 10, 13, 99, 250, 1000, 12345])
def test_report_y_axis_labels_are_distinct_increasing_integers(total):
    from tools import report
    t = report.y_ticks(total)
    assert t[0] == 0 and t[-1] >= total and len(t) <= 6
    assert all(isinstance(x, int) for x in t)
    steps = {b - a for a, b in zip(t, t[1:])}
    assert len(steps) == 1 and steps.pop() > 0                    # evenly spaced, increasing, distinct
    rep = {"timeline": [[0.0, 0, 0, 0, 0]], "duration_s": 1.0, "marks": [],
           "summary": {"waves": [{"size": total, "skipped": 0}]}}
    import re
    labels = [int(x) for x in re.findall(r'text-anchor="end">(-?\d+)</text>', report.svg_chart(rep))]
    assert labels == t
