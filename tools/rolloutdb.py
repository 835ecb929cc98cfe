"""The rollout state in SQLite (WAL mode, one transaction per batch).

Tables
  rollouts  one row per rollout: parameters (JSON), state, reason, the
            controller holding it (pid, host, heartbeat) and timestamps.
  devices   one row per target: wave, seq (order), state, the request id and
            command ids the controller uses (fixed at creation, so a re-sent
            command is the same command), how many times the command was
            published, last OCPP status, progress, reason, version, times.
  events    what happened when (rollout and device events): the report's
            timeline and the live log.

Rollout states: running, paused, stopping (a threshold was hit: no new
starts, running devices finish), stopped, finished, aborted. Final: stopped,
finished, aborted. Device states: pending, waiting (offline at its turn),
config (set_config with the install window sent), sent (update_firmware
sent), installed, failed, skipped (never started: rollout stopped/aborted).

The controller writes `sent` and commits BEFORE it publishes a command, so a
crash can at worst leave a device marked sent that never got the command;
on resume such a device shows no trace of its request id on its retained
`firmware` topic and is sent the same command again (see docs/rollout.md).
"""
import json
import os
import random
import socket
import sqlite3
import time

FINAL = ("stopped", "finished", "aborted")
ACTIVE = ("running", "paused", "stopping")
DEVICE_DONE = ("installed", "failed", "skipped")
DEVICE_FIELDS = ("state", "cmds_sent", "sent_at", "status", "progress", "reason", "version",
                 "updated_at", "finished_at")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    owner_pid INTEGER,
    owner_host TEXT,
    heartbeat REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS devices (
    rollout INTEGER NOT NULL REFERENCES rollouts(id),
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    wave INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    request_id INTEGER NOT NULL,
    cmd_id TEXT NOT NULL,
    cmds_sent INTEGER NOT NULL DEFAULT 0,
    sent_at REAL,
    status TEXT,
    progress INTEGER,
    reason TEXT,
    version TEXT,
    updated_at REAL,
    finished_at REAL,
    PRIMARY KEY (rollout, device)
);
CREATE TABLE IF NOT EXISTS events (
    rollout INTEGER NOT NULL,
    t REAL NOT NULL,
    device TEXT,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_rollout ON events(rollout, t);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

MAX_TARGETS = 99999


def request_id(rollout_id, seq, salt=0):
    """OCPP requestId of target number seq (1..99999) of a rollout: unique
    within a DB (for 21,000 rollouts), stable across restarts, within
    0..2^31-1. `salt` (random per DB) keeps a new DB from reusing the ids a
    fleet still shows on its retained firmware topics."""
    return ((rollout_id - 1 + salt) % 21000) * 100000 + seq


def overlap_message(busy):
    some = sorted(busy.items())[:5]
    return ("%d target(s) already in an active rollout: %s%s (one active rollout per device: let it "
            "finish or abort it first, or --allow-overlap)"
            % (len(busy), ", ".join("%s (rollout %d)" % kv for kv in some), " ..." if len(busy) > 5 else ""))


def default_path():
    return os.environ.get("EVSE_ROLLOUT_DB") or os.path.join("build", "rollouts.db")


class RolloutDB:
    """create=False (every `evsectl rollout` command but `start`): the file
    must exist, so a mistyped --db is an error, not a new empty database.
    create=True makes the file, never a parent directory (except the default
    build/)."""

    def __init__(self, path=None, create=True):
        self.path = path or default_path()
        d = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isfile(self.path):
            if not create:
                raise ValueError("no rollout database %s (is --db mistyped? `rollout start` creates one)"
                                 % self.path)
            if not os.path.isdir(d):
                if path is None and os.path.normpath(self.path) == os.path.normpath(default_path()) \
                        and not os.environ.get("EVSE_ROLLOUT_DB"):
                    os.makedirs(d, exist_ok=True)
                else:
                    raise ValueError("--db %s: directory %s does not exist (not created)" % (self.path, d))
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise ValueError("%s is not a rollout database (%s)" % (self.path, e))
        if "rollouts" not in tables and (tables or not create):
            self.conn.close()
            raise ValueError("%s is not a rollout database%s" % (
                self.path, " (an SQLite file with other tables)" if tables else " (an empty file)"))
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(_SCHEMA)
        self.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('salt', ?)",
                          (str(random.randrange(21000)),))
        self.salt = int(self.conn.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()[0])

    def close(self):
        self.conn.close()

    # -- transactions -------------------------------------------------------------------
    def _tx(self):
        return _Tx(self.conn)

    # -- rollouts --------------------------------------------------------------------------
    def active_for(self, ids):
        """{device: rollout id} of those ids that belong to an active (running,
        paused or stopping) rollout."""
        want = set(ids)
        out = {}
        for r in self.conn.execute("SELECT d.device, d.rollout FROM devices d JOIN rollouts r "
                                   "ON r.id = d.rollout WHERE r.state IN (%s)"
                                   % ",".join("?" * len(ACTIVE)), ACTIVE):
            if r[0] in want:
                out[r[0]] = r[1]
        return out

    def create(self, params, targets, allow_overlap=False):
        """New rollout. targets: [(device_id, wave)] in start order. Returns its id.
        Refuses (ValueError) targets that are in another active rollout unless
        allow_overlap: one active rollout per device."""
        if not targets:
            raise ValueError("no targets")
        if len(targets) > MAX_TARGETS:
            raise ValueError("at most %d targets per rollout" % MAX_TARGETS)
        ids = [t[0] for t in targets]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate target ids")
        now = time.time()
        with self._tx() as c:
            busy = {} if allow_overlap else self.active_for(ids)
            if busy:
                raise ValueError(overlap_message(busy))
            cur = c.execute("INSERT INTO rollouts (created, params, state) VALUES (?, ?, 'running')",
                            (now, json.dumps(params)))
            rid = cur.lastrowid
            c.executemany(
                "INSERT INTO devices (rollout, device, seq, wave, request_id, cmd_id) VALUES (?,?,?,?,?,?)",
                [(rid, dev, i + 1, wave, request_id(rid, i + 1, self.salt), "ro%d-%d" % (rid, i + 1))
                 for i, (dev, wave) in enumerate(targets)])
            c.execute("INSERT INTO events (rollout, t, kind, detail) VALUES (?, ?, 'created', ?)",
                      (rid, now, "%d targets" % len(targets)))
        return rid

    def get(self, rid):
        r = self.conn.execute("SELECT * FROM rollouts WHERE id = ?", (rid,)).fetchone()
        if r is None:
            raise ValueError("no rollout %s in %s" % (rid, self.path))
        d = dict(r)
        d["params"] = json.loads(d["params"])
        return d

    def list(self):
        out = []
        for r in self.conn.execute("SELECT * FROM rollouts ORDER BY id"):
            d = dict(r)
            d["params"] = json.loads(d["params"])
            out.append(d)
        return out

    def counts(self, rid):
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT state, COUNT(*) FROM devices WHERE rollout = ? GROUP BY state", (rid,))}

    def set_state(self, rid, state, reason=None, allowed_from=None):
        """Change a rollout's state (commands from the CLI or the controller).
        Raises ValueError when the current state does not allow it."""
        with self._tx() as c:
            r = c.execute("SELECT state FROM rollouts WHERE id = ?", (rid,)).fetchone()
            if r is None:
                raise ValueError("no rollout %s in %s" % (rid, self.path))
            cur = r[0]
            if allowed_from is not None and cur not in allowed_from:
                raise ValueError("rollout %s is %s: cannot make it %s" % (rid, cur, state))
            now = time.time()
            c.execute("UPDATE rollouts SET state = ?, reason = COALESCE(?, reason), finished = ? "
                      "WHERE id = ?", (state, reason, now if state in FINAL else None, rid))
            c.execute("INSERT INTO events (rollout, t, kind, detail) VALUES (?, ?, ?, ?)",
                      (rid, now, "state", state + (": " + reason if reason else "")))
        return cur

    # -- the controller's lease ------------------------------------------------------------
    def owner_alive(self, rid, stale_s=10.0):
        """(pid, host) of a live controller holding the rollout, or None."""
        r = self.get(rid)
        pid, host, hb = r["owner_pid"], r["owner_host"], r["heartbeat"]
        if not pid or hb is None or time.time() - hb > stale_s:
            return None
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
        return pid, host

    def claim(self, rid, stale_s=10.0):
        """Take the rollout for this process; False when another live controller holds it."""
        with self._tx() as c:
            owner = self.owner_alive(rid, stale_s)
            if owner is not None and owner[0] != os.getpid():
                return False
            c.execute("UPDATE rollouts SET owner_pid = ?, owner_host = ?, heartbeat = ? WHERE id = ?",
                      (os.getpid(), socket.gethostname(), time.time(), rid))
        return True

    def release(self, rid):
        self.conn.execute("UPDATE rollouts SET owner_pid = NULL, heartbeat = NULL "
                          "WHERE id = ? AND owner_pid = ?", (rid, os.getpid()))

    # -- devices ------------------------------------------------------------------------------
    def devices(self, rid):
        return [dict(r) for r in self.conn.execute(
            "SELECT * FROM devices WHERE rollout = ? ORDER BY seq", (rid,))]

    def mark_sent(self, rid, rows, now=None):
        """Commit, before publishing, that these devices get their command now.
        rows: [(device, state)] with state 'config' or 'sent'."""
        now = now or time.time()
        with self._tx() as c:
            c.executemany("UPDATE devices SET state = ?, cmds_sent = cmds_sent + 1, "
                          "sent_at = COALESCE(sent_at, ?), updated_at = ? "
                          "WHERE rollout = ? AND device = ?",
                          [(st, now, now, rid, dev) for dev, st in rows])
            c.executemany("INSERT INTO events (rollout, t, device, kind, detail) VALUES (?,?,?,?,?)",
                          [(rid, now, dev, st, None) for dev, st in rows])

    def save(self, rid, updates, events=(), heartbeat=True):
        """One transaction: device field updates [(device, {field: value})],
        events [(t, device, kind, detail)], the heartbeat."""
        with self._tx() as c:
            for dev, f in updates:
                keys = [k for k in f if k in DEVICE_FIELDS]
                if not keys:
                    continue
                c.execute("UPDATE devices SET %s WHERE rollout = ? AND device = ?"
                          % ", ".join("%s = ?" % k for k in keys),
                          [f[k] for k in keys] + [rid, dev])
            if events:
                c.executemany("INSERT INTO events (rollout, t, device, kind, detail) VALUES (?,?,?,?,?)",
                              [(rid, t, dev, kind, detail) for t, dev, kind, detail in events])
            if heartbeat:
                c.execute("UPDATE rollouts SET heartbeat = ?, owner_pid = ?, owner_host = ? "
                          "WHERE id = ?", (time.time(), os.getpid(), socket.gethostname(), rid))

    def events(self, rid):
        return [dict(r) for r in self.conn.execute(
            "SELECT t, device, kind, detail FROM events WHERE rollout = ? ORDER BY t, rowid", (rid,))]


class _Tx:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, et, ev, tb):
        if et is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False
