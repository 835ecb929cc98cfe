"""`evsectl rollout`: roll a signed release out to a fleet in stages over MQTT.

A canary group first, then waves; a wave opens when the one before reached
the success threshold, and the rollout stops (no new starts; running devices
finish) when a group's failures pass the error threshold. Pause, resume and
abort work from any shell, with or without the controller running. The state
lives in SQLite (tools/rolloutdb.py): `rollout resume ID` after a crash
continues where it stood, without sending any device its command twice.
Device protocol: docs/mqtt.md; concepts and every option: docs/rollout.md.
"""
import argparse
import collections
import datetime
import fnmatch
import json
import math
import os
import random
import sys
import threading
import time
import urllib.parse

from tools import rolloutdb

FAIL_STATUSES = ("DownloadFailed", "InvalidSignature", "InstallVerificationFailed", "InstallationFailed")
POST_DOWNLOAD = ("Downloaded", "SignatureVerified", "InstallScheduled", "Installing", "InstallRebooting",
                 "Installed")
SCHEDULED = ("DownloadScheduled", "InstallScheduled")
OCPP_STATUSES = ("Downloaded", "DownloadFailed", "Downloading", "DownloadScheduled", "DownloadPaused",
                 "Idle", "InstallationFailed", "Installing", "Installed", "InstallRebooting",
                 "InstallScheduled", "InstallVerificationFailed", "InvalidSignature", "SignatureVerified")
IN_FLIGHT = ("config", "sent")
TOPICS = ("evse/+/status", "evse/+/firmware", "evse/+/reply")
EXIT = {"finished": 0, "stopped": 3, "aborted": 4}
MAX_ATTEMPTS = 5      # commands (set_config + update_firmware, re-sends included) per device


# ---- parsing the options (pure, tested) ------------------------------------------------

def parse_version(text):
    """'1.2.3+4' -> (1, 2, 3, 4); ValueError on anything else."""
    if not isinstance(text, str):
        raise ValueError("version must be a string like 1.2.3")
    main, _, build = text.strip().partition("+")
    parts = main.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts) or (build and not build.isdigit()):
        raise ValueError("bad version %r (want MAJOR.MINOR.REVISION[+BUILD])" % text)
    nums = [int(p) for p in parts] + [0] * (3 - len(parts))
    return (nums[0], nums[1], nums[2], int(build or 0))


def parse_count(text, total, what="size"):
    """'10%' of total (rounded up), '25' (a count) or 'all' -> an int 0..total."""
    t = str(text).strip().lower()
    if t == "all":
        return total
    try:
        if t.endswith("%"):
            p = float(t[:-1])
            if not 0 <= p <= 100:
                raise ValueError
            return min(total, int(math.ceil(total * p / 100.0 - 1e-9)))
        n = int(t)
        if n < 0:
            raise ValueError
        return min(total, n)
    except ValueError:
        raise ValueError("%s %r: want a count (25), a percentage (10%%) or 'all'" % (what, text))


def parse_fraction(text, what):
    """'90%' or '0.9' -> 0.9."""
    t = str(text).strip()
    try:
        v = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        v = -1
    if not 0 <= v <= 1:
        raise ValueError("%s %r: want a percentage 0%%..100%% or a fraction 0..1" % (what, text))
    return v


def plan_groups(total, canary="0", waves="100%"):
    """Group sizes: the canary group (if any) first, then the waves. Wave
    entries are cumulative points of the whole target list ('10%,30%,100%':
    up to 10 % of all targets, then up to 30 %, then all; the canary counts
    toward them); a last wave always takes whatever is left."""
    if total <= 0:
        raise ValueError("no targets")
    c = parse_count(canary, total, "canary")
    groups = []
    done = 0
    if c:
        groups.append(c)
        done = c
    items = [w for w in str(waves).split(",") if w.strip()]
    if not items:
        raise ValueError("--waves: empty list")
    for w in items:
        upto = parse_count(w, total, "wave")
        if upto > done:
            groups.append(upto - done)
            done = upto
    if done < total:
        groups.append(total - done)
    return groups


def parse_window(text):
    """'22:00-06:00' (device local time, may wrap midnight) -> [1320, 360]."""
    if text is None:
        return None
    try:
        a, b = str(text).split("-")
        out = []
        for part in (a, b):
            h, m = part.strip().split(":")
            h, m = int(h), int(m)
            if not (0 <= h <= 23 and 0 <= m <= 59):
                raise ValueError
            out.append(h * 60 + m)
    except ValueError:
        raise ValueError("install window %r: want HH:MM-HH:MM (device local time), e.g. 22:00-06:00" % text)
    if out[0] == out[1]:
        raise ValueError("install window %r is empty" % text)
    return out


def parse_iso(text, what):
    """ISO 8601 with Z or an offset -> the same text, normalised to UTC 'Z'."""
    if text is None:
        return None
    try:
        t = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise ValueError("%s %r: want ISO 8601 with Z or an offset, e.g. 2030-01-01T02:00:00Z" % (what, text))
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_OPS = ("<=", ">=", "!=", "<", ">", "=")
FILTER_KEYS = ("id", "version", "board", "online", "slot")


def parse_filter(text):
    """'board=sim,version<1.1.0' -> [(key, op, value)]."""
    terms = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        for op in _OPS:
            k, sep, v = part.partition(op)
            if sep:
                break
        else:
            raise ValueError("filter term %r: want KEY OP VALUE with OP one of %s" % (part, " ".join(_OPS)))
        k, v = k.strip(), v.strip()
        if k not in FILTER_KEYS:
            raise ValueError("filter key %r: one of %s" % (k, ", ".join(FILTER_KEYS)))
        if k == "version":
            parse_version(v)
        elif op not in ("=", "!="):
            raise ValueError("filter %r: %s takes only = or !=" % (part, k))
        if k == "online" and v not in ("true", "false"):
            raise ValueError("filter %r: online=true or online=false" % part)
        terms.append((k, op, v))
    if not terms:
        raise ValueError("empty filter")
    return terms


def match_filter(terms, dev):
    """dev: {"id", "online", "version", "slot", "board"} -> bool."""
    for k, op, v in terms:
        have = dev.get(k)
        if k == "version":
            try:
                a, b = parse_version(have), parse_version(v)
            except ValueError:
                return False
            ok = {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        elif k == "online":
            ok = (bool(have) == (v == "true"))
        elif k == "id":
            ok = fnmatch.fnmatchcase(have or "", v)
        else:
            ok = (have == v)
        if op == "!=" and k != "version":
            ok = not ok
        if not ok:
            return False
    return True


def parse_mqtt_url(url):
    """mqtt://user:pass@host:port -> (host, port, user, password)."""
    u = urllib.parse.urlsplit(url if "://" in url else "mqtt://" + url)
    if u.scheme not in ("mqtt", "tcp"):
        raise ValueError("broker URL %r: want mqtt://[user:password@]host[:port]" % url)
    if not u.hostname:
        raise ValueError("broker URL %r has no host" % url)
    return (u.hostname, u.port or 1883, urllib.parse.unquote(u.username) if u.username else None,
            urllib.parse.unquote(u.password) if u.password else None)


def load_release(path, base_url):
    """The release JSON (tools/release.py) + base URL -> {version, board, image, url, sha256, size}."""
    with open(path) as f:
        try:
            desc = json.load(f)
        except ValueError as e:
            raise ValueError("release %s: not JSON (%s)" % (path, e))
    if not isinstance(desc, dict):
        raise ValueError("release %s: not a release description" % path)
    for k in ("version", "board", "image"):
        if not isinstance(desc.get(k), str) or not desc[k]:
            raise ValueError("release %s: missing %r (is it a JSON written by `evsectl release`?)" % (path, k))
    parse_version(desc["version"])
    b = urllib.parse.urlsplit(base_url or "")
    if b.scheme not in ("http", "https") or not b.netloc:
        raise ValueError("--base-url %r: want http(s)://host[:port]/path/" % base_url)
    url = base_url.rstrip("/") + "/" + urllib.parse.quote(desc["image"])
    if len(url) > 512:
        raise ValueError("image URL longer than the 512 characters a device accepts")
    return {"version": desc["version"], "board": desc["board"], "image": desc["image"], "url": url,
            "sha256": desc.get("sha256"), "size": desc.get("size"), "file": os.path.abspath(path)}


def read_targets(text):
    """'a,b,c' or '@file' (one id per line, # comments) -> list of ids."""
    if text.startswith("@"):
        with open(text[1:]) as f:
            ids = [ln.split("#", 1)[0].strip() for ln in f]
    else:
        ids = [x.strip() for x in text.split(",")]
    ids = [i for i in ids if i]
    for i in ids:
        if "/" in i or "+" in i or "#" in i or len(i) > 64:
            raise ValueError("target %r is not a device id" % i)
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate device ids in the target list")
    return ids


# ---- MQTT (paho) ----------------------------------------------------------------------------

class Bus:
    """One paho-mqtt connection; messages land in a deque the caller drains."""

    def __init__(self, url, topics, client_id=None, timeout=10.0):
        import paho.mqtt.client as mqtt
        host, port, user, pw = parse_mqtt_url(url)
        self.q = collections.deque()
        self.wake = threading.Event()
        self._subscribed = threading.Event()
        self._topics = list(topics)
        self.error = None
        cid = client_id or "evsectl-%d-%04x" % (os.getpid(), random.getrandbits(16))
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        if user:
            c.username_pw_set(user, pw)
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        self.client = c
        try:
            c.connect(host, port, keepalive=30)
        except OSError as e:
            raise ConnectionError("cannot reach the broker at %s:%d: %s" % (host, port, e))
        c.loop_start()
        if not self._subscribed.wait(timeout):
            c.loop_stop()
            raise ConnectionError("broker %s:%d: %s" % (host, port, self.error or "no answer within %ss" % timeout))

    def _on_connect(self, client, userdata, flags, rc, props=None):
        if rc.is_failure:
            self.error = "refused: %s" % rc
            return
        client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, client, userdata, msg):
        self.q.append((msg.topic, msg.payload, bool(msg.retain)))
        self.wake.set()

    def publish(self, topic, obj, qos=1):
        self.client.publish(topic, json.dumps(obj, separators=(",", ":")), qos=qos)

    def drain(self):
        q = self.q
        while q:
            yield q.popleft()

    def settle(self, quiet_s=0.3, max_s=5.0):
        """Wait until the retained messages stopped arriving."""
        t_end = time.time() + max_s
        last = len(self.q)
        quiet_until = time.time() + quiet_s
        while time.time() < t_end:
            time.sleep(0.05)
            n = len(self.q)
            if n != last:
                last = n
                quiet_until = time.time() + quiet_s
            elif time.time() >= quiet_until:
                return

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def decode(payload):
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return d if isinstance(d, dict) else None


def split_topic(topic):
    """'evse/<id>/<kind>' -> (id, kind) or (None, None)."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != "evse":
        return None, None
    return parts[1], "/".join(parts[2:])


def discover(url, discover_s=2.0):
    """Retained statuses under evse/+/status -> {id: status dict}."""
    bus = Bus(url, ["evse/+/status"])
    try:
        bus.settle(quiet_s=min(0.5, discover_s), max_s=discover_s)
        seen = {}
        for topic, payload, _ in bus.drain():
            dev, kind = split_topic(topic)
            d = decode(payload)
            if dev and kind == "status" and d is not None:
                seen[dev] = d
        return seen
    finally:
        bus.close()


def query_boards(url, ids, timeout_s=5.0):
    """get_config to each device -> {id: board} for those that answered."""
    bus = Bus(url, ["evse/+/reply"])
    boards = {}
    try:
        tag = "disc%04x-" % random.getrandbits(16)
        for i in ids:
            bus.publish("evse/%s/cmd/get_config" % i, {"id": tag + i})
        t_end = time.time() + timeout_s
        while time.time() < t_end and len(boards) < len(ids):
            bus.wake.wait(0.1)
            bus.wake.clear()
            for topic, payload, _ in bus.drain():
                dev, kind = split_topic(topic)
                d = decode(payload)
                if kind == "reply" and d and d.get("id") == tag + str(dev) and d.get("ok"):
                    boards[dev] = (d.get("config") or {}).get("board")
    finally:
        bus.close()
    return boards


# ---- the controller ---------------------------------------------------------------------------

class Dev:
    __slots__ = ("id", "seq", "wave", "state", "request_id", "cmd_id", "cmds_sent", "sent_at", "status",
                 "progress", "reason", "version", "updated_at", "finished_at", "online", "trial",
                 "evidence", "ack_at", "last_msg", "wait_since", "dirty", "slot", "slot_before",
                 "claimed", "rebooted")

    def __init__(self, row):
        for k in ("id", "seq", "wave", "state", "request_id", "cmd_id", "cmds_sent", "sent_at", "status",
                  "progress", "reason", "version", "updated_at", "finished_at"):
            setattr(self, k, row.get("device" if k == "id" else k))
        self.online = None
        self.trial = False
        self.evidence = False
        self.ack_at = None
        self.last_msg = None
        self.wait_since = None
        self.dirty = set()
        self.slot = None           # the slot the device last reported on evse/<id>/status
        self.slot_before = None    # ... when its command was sent (None: unknown, e.g. after a resume)
        self.claimed = False       # it published Installed for our update
        self.rebooted = False      # it went offline or reported a new boot since the command


class Progress:
    """Terminal output: redrawn bars on a tty, one line per event otherwise."""

    def __init__(self, out, mode="auto"):
        self.out = out
        if mode == "auto":
            mode = "bars" if getattr(out, "isatty", lambda: False)() else "lines"
        self.mode = mode
        self._drawn = 0
        self._last = 0.0

    def event(self, t, dev, kind, detail):
        if self.mode == "lines":
            ts = time.strftime("%H:%M:%S", time.localtime(t))
            who = dev if dev else "rollout"
            self.out.write("%s  %-14s %-18s %s\n" % (ts, who, kind, detail or ""))
            self.out.flush()

    def note(self, text):
        if self.mode != "none":
            self._erase()
            self.out.write(text + "\n")
            self.out.flush()

    def _erase(self):
        if self.mode == "bars" and self._drawn:
            self.out.write("\x1b[%dF\x1b[J" % self._drawn)
            self._drawn = 0

    def draw(self, ctl, force=False):
        if self.mode != "bars":
            return
        now = time.time()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        lines = render_lines(ctl.summary(), width=30)
        self._erase()
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn = len(lines)


def bar(done, failed, running, total, width=30):
    if total <= 0:
        return "[" + " " * width + "]"
    a = int(round(width * done / total))
    b = int(round(width * (done + failed) / total)) - a
    c = int(round(width * (done + failed + running) / total)) - a - b
    return "[" + "#" * a + "x" * b + ">" * c + "." * max(0, width - a - b - c) + "]"


def render_lines(s, width=30):
    """Progress lines from a summary dict (Controller.summary / report)."""
    lines = ["rollout %s  %s -> %s  state: %s%s" % (s["id"], s.get("board", "?"), s["version"], s["state"],
                                                    ("  (%s)" % s["reason"]) if s.get("reason") else "")]
    for w in s["waves"]:
        lines.append("  %-8s %s %4d/%-4d ok  %3d failed  %3d running  %3d waiting" % (
            w["name"], bar(w["installed"], w["failed"], w["running"], w["size"], width),
            w["installed"], w["size"], w["failed"], w["running"], w["waiting"]))
    st = s.get("statuses") or {}
    if st:
        lines.append("  status:  " + "  ".join("%s %d" % (k, v) for k, v in sorted(st.items())))
    fails = s.get("failures") or []
    if fails:
        lines.append("  failures (%d):" % len(fails))
        for f in fails[-5:]:
            lines.append("    %-16s %s" % (f["device"], f["reason"]))
    return lines


class Controller:
    """Drives one rollout from its DB row to a final state."""

    def __init__(self, db, rid, mqtt_url=None, out=None, progress="auto", tick_s=0.1, bus=None):
        self.db = db
        self.rid = rid
        r = db.get(rid)
        self.p = r["params"]
        self.state = r["state"]
        self.reason = r["reason"]
        self.url = mqtt_url or self.p["mqtt"]
        self.out = out or sys.stdout
        self.prog = Progress(self.out, progress)
        self.tick_s = tick_s
        self.target = parse_version(self.p["release"]["version"])
        self.devs = [Dev(x) for x in db.devices(rid)]
        self.by_id = {d.id: d for d in self.devs}
        self.groups = self.p["groups"]
        self.waves = collections.defaultdict(list)
        self.wc = collections.defaultdict(collections.Counter)   # wave -> device state -> count
        self.cursor = collections.defaultdict(int)                # wave -> first index maybe pending
        for d in self.devs:
            self.waves[d.wave].append(d)
            self.wc[d.wave][d.state] += 1
        self._dirty = set()
        self.inflight = {d.id: d for d in self.devs if d.state in IN_FLIGHT}
        self.waiting = {d.id: d for d in self.devs if d.state == "waiting"}
        self.opened = max([d.wave for d in self.devs if d.state != "pending"] or [0])
        self.events = []
        self.bus = bus
        self.statuses = collections.Counter()
        self._to_send = []

    # -- bookkeeping ------------------------------------------------------------------------
    def _ev(self, dev, kind, detail=None, t=None):
        t = t or time.time()
        self.events.append((t, dev, kind, detail))
        self.prog.event(t, dev, kind, detail)

    def _set(self, d, **kw):
        for k, v in kw.items():
            old = getattr(d, k)
            if old != v:
                if k == "state":
                    c = self.wc[d.wave]
                    c[old] -= 1
                    c[v] += 1
                setattr(d, k, v)
                d.dirty.add(k)
                self._dirty.add(d)

    def _finish(self, d, state, reason=None):
        now = time.time()
        self.inflight.pop(d.id, None)
        self.waiting.pop(d.id, None)
        self._set(d, state=state, reason=reason, finished_at=now, updated_at=now)
        self._ev(d.id, state, reason, now)

    def _flush(self):
        ups = []
        for d in self._dirty:
            if d.dirty:
                ups.append((d.id, {k: getattr(d, k) for k in d.dirty}))
                d.dirty = set()
        self._dirty = set()
        ev, self.events = self.events, []
        self.db.save(self.rid, ups, ev)

    # -- messages ------------------------------------------------------------------------------
    def apply(self, topic, payload, retained):
        dev, kind = split_topic(topic)
        d = self.by_id.get(dev)
        if d is None:
            return
        m = decode(payload)
        if m is None:
            return
        now = time.time()
        if kind == "status":
            self._on_status(d, m, now)
        elif kind == "firmware":
            self._on_firmware(d, m, retained, now)
        elif kind == "reply":
            self._on_reply(d, m, now)

    def _on_status(self, d, m, now):
        online = bool(m.get("online"))
        d.online = online
        if not online:
            if d.state in IN_FLIGHT and d.evidence:
                d.rebooted = True
            return
        v = m.get("version")
        if isinstance(v, str):
            self._set(d, version=v)
        d.trial = bool(m.get("trial"))
        slot = m.get("slot")
        d.slot = slot.lower() if isinstance(slot, str) else None
        if d.state in IN_FLIGHT:
            d.last_msg = now
            if d.trial or d.claimed or (d.slot_before is not None and d.slot not in (None, d.slot_before)):
                d.rebooted = True
            self._judge(d)

    def _judge(self, d):
        """Installed only on what the device reports after its reboot: the
        target version, not on trial, and (when known) another slot than
        before. A device that says Installed but boots the old version (or
        the same slot) failed."""
        if d.state not in IN_FLIGHT or d.trial:
            return
        same_slot = d.slot_before is not None and d.slot is not None and d.slot == d.slot_before
        if self._at_target(d) and not same_slot:
            d.evidence = True
            self._finish(d, "installed", None)
        elif d.claimed and d.rebooted:
            self._finish(d, "failed", "reported Installed but boots %s on slot %s (expected %s on %s)"
                         % (d.version, d.slot, self.p["release"]["version"],
                            "another slot than " + d.slot_before if d.slot_before else "the new slot"))

    def _at_target(self, d):
        try:
            return parse_version(d.version) == self.target
        except ValueError:
            return False

    def _on_firmware(self, d, m, retained, now):
        st = m.get("status")
        if st not in OCPP_STATUSES:
            return
        rq = m.get("requestId")
        if d.state not in IN_FLIGHT:
            if d.state in ("pending", "waiting"):
                self._set(d, status=st)
            return
        mine = rq == d.request_id
        # a status without requestId counts only when it arrives live after our
        # command (Installed/InstallationFailed after a reboot are sent so)
        if not mine and not (rq is None and not retained and d.evidence):
            return
        d.evidence = True
        d.last_msg = now
        prog = m.get("progress") if isinstance(m.get("progress"), int) else None
        if st != d.status:
            self._ev(d.id, st, (m.get("reason") or (("%d%%" % prog) if prog is not None else None)), now)
        self._set(d, status=st, progress=prog, updated_at=now)
        if st in FAIL_STATUSES:
            why = m.get("reason")
            self._finish(d, "failed", "%s: %s" % (st, why) if why else st)
        elif st == "Installed":
            d.claimed = True
            self._judge(d)

    def _on_reply(self, d, m, now):
        cid = m.get("id")
        if d.state not in IN_FLIGHT or cid not in (d.cmd_id + "u", d.cmd_id + "c"):
            return
        d.evidence = True
        d.last_msg = now
        if not m.get("ok"):
            what = "update_firmware" if cid.endswith("u") else "set_config"
            self._finish(d, "failed", "%s refused: %s" % (what, m.get("error")))
        elif cid.endswith("c") and d.state == "config":
            self._ev(d.id, "window set", "%s" % self.p["install_window"], now)
            self._to_send.append((d, "sent"))
        elif cid.endswith("u"):
            self._ev(d.id, "accepted", None, now)

    # -- commands ----------------------------------------------------------------------------------
    def _cmd(self, d, state):
        base = "evse/%s/cmd/" % d.id
        if state == "config":
            return base + "set_config", {"id": d.cmd_id + "c",
                                          "changes": {"install_window": self.p["install_window"]}}
        fw = {"location": self.p["release"]["url"], "retrieveDateTime": self.p["retrieve_at"]}
        if self.p.get("install_at"):
            fw["installDateTime"] = self.p["install_at"]
        return base + "update_firmware", {"id": d.cmd_id + "u", "requestId": d.request_id,
                                          "retries": self.p["retries"],
                                          "retryInterval": self.p["retry_interval"], "firmware": fw}

    def _send(self, batch, resend=False):
        """batch: [(dev, 'config'|'sent')]: commit first, then publish."""
        if not batch:
            return
        self._flush()
        now = time.time()
        self.db.mark_sent(self.rid, [(d.id, st) for d, st in batch], now)
        for d, st in batch:
            c = self.wc[d.wave]
            c[d.state] -= 1
            c[st] += 1
            d.state = st
            d.cmds_sent += 1
            d.sent_at = d.sent_at or now
            d.evidence = False
            d.claimed = d.rebooted = False
            if not resend:
                d.slot_before = d.slot
            d.ack_at = now + self.p["ack_timeout"]
            d.last_msg = now
            self.inflight[d.id] = d
            self.waiting.pop(d.id, None)
            self.prog.event(now, d.id, "set_config" if st == "config" else "update_firmware",
                            "requestId %d%s" % (d.request_id, " (sent again: no trace of it)" if resend else ""))
        for d, st in batch:
            topic, msg = self._cmd(d, st)
            self.bus.publish(topic, msg)

    # -- decisions ---------------------------------------------------------------------------------
    def _wave_counts(self, w):
        c = self.wc[w]
        return c, len(self.waves[w]) - c["skipped"]

    def _check_thresholds(self):
        if self.state not in ("running", "paused"):
            return
        err = self.p["error_threshold"]
        ok_need = self.p["success_threshold"]
        for w in range(0, self.opened + 1):
            c, size = self._wave_counts(w)
            if size and c["failed"] / size > err + 1e-9:
                return self._stop("%s: %d of %d failed (error threshold %d%%)"
                                  % (self._wname(w), c["failed"], size, round(err * 100)))
            done = c["installed"] + c["failed"]
            if size and done == size and c["installed"] < math.ceil(ok_need * size - 1e-9):
                return self._stop("%s: %d of %d installed (success threshold %d%%)"
                                  % (self._wname(w), c["installed"], size, round(ok_need * 100)))

    def _stop(self, reason):
        self.db.set_state(self.rid, "stopping", reason)
        self.state, self.reason = "stopping", reason
        self.prog.note("STOPPING: %s (no new devices; %d running finish)" % (reason, len(self.inflight)))
        self._ev(None, "stopping", reason)

    def _wname(self, w):
        return "canary" if (w == 0 and self.p["canary_count"]) else \
            "wave %d" % (w + (0 if self.p["canary_count"] else 1))

    def _open_next_wave(self):
        w = self.opened
        if w + 1 >= len(self.groups):
            return False
        c, size = self._wave_counts(w)
        if c["installed"] >= math.ceil(self.p["success_threshold"] * size - 1e-9):
            self.opened = w + 1
            self._ev(None, "wave", "%s opens (%d devices)" % (self._wname(w + 1), len(self.waves[w + 1])))
            return True
        return False

    def _start_devices(self, now):
        while self._open_next_wave():
            pass
        mc = self.p["max_concurrent"]
        busy = 0
        if mc:
            busy = sum(1 for d in self.inflight.values() if d.status not in POST_DOWNLOAD)
        batch = []
        first = "config" if self.p["install_window"] else "sent"
        for d in list(self.waiting.values()):
            if mc and busy >= mc:
                break
            if d.online:
                batch.append((d, first))
                busy += 1
        for w in range(0, self.opened + 1):
            devs = self.waves[w]
            i = self.cursor[w]
            while i < len(devs) and devs[i].state != "pending":
                i += 1
            self.cursor[w] = i
            for d in devs[i:]:
                if mc and busy >= mc:
                    break
                if d.state != "pending":
                    continue
                if d.online and d.trial:
                    continue       # on trial (another rollout's update): never "installed"; wait for its verdict
                if d.online and self._at_target(d):
                    self._finish(d, "installed", "already on %s" % d.version)
                    continue
                if d.online and d.version and parse_version_safe(d.version) > self.target:
                    self._finish(d, "skipped", "runs newer %s" % d.version)
                    continue
                if not d.online:
                    self._set(d, state="waiting", updated_at=now)
                    d.wait_since = now
                    self.waiting[d.id] = d
                    self._ev(d.id, "waiting", "offline: the command goes out when it connects", now)
                    continue
                batch.append((d, first))
                busy += 1
        self._send(batch)

    def _check_timeouts(self, now):
        p = self.p
        resend = []
        for d in list(self.inflight.values()):
            if not d.evidence and d.ack_at is not None and now >= d.ack_at:
                if d.cmds_sent < MAX_ATTEMPTS:
                    resend.append((d, d.state))
                else:
                    self._finish(d, "failed", "no answer to %d commands" % d.cmds_sent)
                continue
            lim = p["schedule_timeout"] if d.status in SCHEDULED else p["device_timeout"]
            if d.last_msg is not None and now - d.last_msg > lim:
                self._finish(d, "failed", "timeout: nothing for %ds (last status %s)" % (lim, d.status))
        for d in list(self.waiting.values()):
            if d.wait_since is None:
                d.wait_since = now
            if now - d.wait_since > p["device_timeout"]:
                self._finish(d, "failed", "timeout: offline for %ds" % p["device_timeout"])
        self._send(resend, resend=True)

    def _recover(self, now):
        """After (re)start: devices that were sent a command before."""
        n = 0
        resend_cfg = []
        for d in self.inflight.values():
            n += 1
            if d.state == "config":
                resend_cfg.append((d, "config"))   # set_config is idempotent; its reply is not retained
                continue
            d.last_msg = now
            if not d.evidence:
                d.ack_at = now + self.p["ack_timeout"]
        for d in self.waiting.values():
            d.wait_since = now
        if n:
            self.prog.note("resuming: %d devices were already sent their command (%d without a trace yet)"
                           % (n, sum(1 for d in self.inflight.values() if not d.evidence)))
        # a set_config re-sent: do not count it as an attempt of update_firmware
        self._send(resend_cfg, resend=True)

    # -- summary -------------------------------------------------------------------------------------
    def summary(self):
        waves = []
        for w in range(len(self.groups)):
            c, size = self._wave_counts(w)
            waves.append({"name": self._wname(w), "size": size, "installed": c["installed"],
                          "failed": c["failed"], "running": c["config"] + c["sent"],
                          "waiting": c["waiting"], "pending": c["pending"], "skipped": c["skipped"],
                          "open": w <= self.opened})
        st = collections.Counter(d.status for d in self.devs if d.status and d.state != "pending")
        fails = [{"device": d.id, "reason": d.reason} for d in self.devs if d.state == "failed"]
        return {"id": self.rid, "version": self.p["release"]["version"], "board": self.p["release"]["board"],
                "state": self.state, "reason": self.reason, "waves": waves, "statuses": dict(st),
                "failures": fails}

    # -- the loop ------------------------------------------------------------------------------------
    def run(self):
        if self.state in rolloutdb.FINAL:
            self.prog.note("rollout %d is %s%s" % (self.rid, self.state,
                                                    " (%s)" % self.reason if self.reason else ""))
            return EXIT[self.state]
        if not self.db.claim(self.rid):
            if self.bus is not None:
                self.bus.close()
            raise RuntimeError("rollout %d is held by a running controller (pid %s)"
                               % (self.rid, self.db.owner_alive(self.rid)[0]))
        try:
            if self.bus is None:
                self.bus = Bus(self.url, TOPICS)
        except ConnectionError:
            self.db.release(self.rid)
            raise
        try:
            return self._run()
        finally:
            try:
                self._flush()
            finally:
                self.db.release(self.rid)
                self.bus.close()

    def _run(self):
        self.bus.settle()
        for topic, payload, ret in self.bus.drain():
            self.apply(topic, payload, ret)
        now = time.time()
        self._recover(now)
        self._ev(None, "controller", "started (pid %d), %s" % (os.getpid(), self.state))
        self._flush()
        last_flush = last_state = last_timeouts = now
        while True:
            self.bus.wake.wait(self.tick_s)
            self.bus.wake.clear()
            for topic, payload, ret in self.bus.drain():
                self.apply(topic, payload, ret)
            if self._to_send:
                batch = [(d, st) for d, st in self._to_send if d.state == "config"]
                self._to_send = []
                self._send(batch)
            now = time.time()
            if now - last_state >= 0.3:
                last_state = now
                r = self.db.get(self.rid)
                if r["state"] != self.state:
                    self.prog.note("rollout %d: %s -> %s%s" % (self.rid, self.state, r["state"],
                                                              " (%s)" % r["reason"] if r["reason"] else ""))
                    self.state, self.reason = r["state"], r["reason"]
            if now - last_timeouts >= 0.25:
                last_timeouts = now
                self._check_timeouts(now)
            if self.state == "aborted":
                self._skip_rest("aborted")
                break
            self._check_thresholds()
            if self.state == "running":
                self._start_devices(now)
            if self.state == "stopping" and not self.inflight:
                self._skip_rest("stopped")
                self.db.set_state(self.rid, "stopped", self.reason)
                self.state = "stopped"
                break
            if sum(c[k] for c in self.wc.values() for k in rolloutdb.DEVICE_DONE) == len(self.devs):
                self.db.set_state(self.rid, "finished", None, allowed_from=("running", "paused", "stopping"))
                self.state = "finished"
                break
            if now - last_flush >= 0.5:
                self._flush()
                last_flush = now
            self.prog.draw(self)
        self._flush()
        self.prog.draw(self, force=True)
        return EXIT[self.state]

    def _skip_rest(self, why):
        for d in self.devs:
            if d.state in ("pending", "waiting"):
                self._finish(d, "skipped", "rollout " + why)


def parse_version_safe(v):
    try:
        return parse_version(v)
    except ValueError:
        return (0, 0, 0, 0)


# ---- the command line ---------------------------------------------------------------------------

def _db(a, create=False):
    return rolloutdb.RolloutDB(a.db, create=create)


def build_params(a, total):
    rel = load_release(a.release, a.base_url)
    groups = plan_groups(total, a.canary, a.waves)
    canary = parse_count(a.canary, total, "canary")
    mc = a.max_concurrent
    if mc is not None and mc < 1:
        raise ValueError("--max-concurrent must be at least 1")
    for name in ("device_timeout", "schedule_timeout", "ack_timeout"):
        if getattr(a, name) <= 0:
            raise ValueError("--%s must be positive" % name.replace("_", "-"))
    if not 0 <= a.retries <= 100 or not 0 <= a.retry_interval <= 86400:
        raise ValueError("--retries 0..100, --retry-interval 0..86400 (what a device accepts)")
    return {
        "release": rel, "mqtt": a.mqtt, "groups": groups, "canary_count": canary,
        "waves": a.waves, "canary": a.canary,
        "success_threshold": parse_fraction(a.success_threshold, "--success-threshold"),
        "error_threshold": parse_fraction(a.error_threshold, "--error-threshold"),
        "max_concurrent": mc,
        "install_window": parse_window(a.install_window),
        "install_at": parse_iso(a.install_at, "--install-at"),
        "retrieve_at": parse_iso(a.retrieve_at, "--retrieve-at") or
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "retries": a.retries, "retry_interval": a.retry_interval,
        "device_timeout": a.device_timeout, "schedule_timeout": a.schedule_timeout,
        "ack_timeout": a.ack_timeout, "report_dir": a.report_dir,
        "filter": a.filter,
    }


def select_targets(a, out):
    """The target ids from --targets and/or --filter (over evse/+/status)."""
    if not a.targets and not a.filter:
        raise ValueError("give --targets ID,ID,... (or @file) and/or --filter KEY=VALUE,...")
    ids = read_targets(a.targets) if a.targets else None
    if a.filter:
        terms = parse_filter(a.filter)
        seen = discover(a.mqtt, a.discover_s)
        out.write("discovered %d devices on evse/+/status\n" % len(seen))
        cands = [i for i in (ids if ids is not None else sorted(seen))]
        info = {i: dict(seen.get(i) or {}, id=i) for i in cands}
        if any(k == "board" for k, _, _ in terms):
            # the status topic does not carry the board: ask the devices
            ask = [i for i in cands if info[i].get("online")]
            boards = query_boards(a.mqtt, ask, max(2.0, a.discover_s))
            for i in cands:
                info[i]["board"] = boards.get(i)
            silent = [i for i in ask if i not in boards]
            if silent:
                out.write("%d devices did not answer get_config (board unknown, not selected)\n" % len(silent))
        ids = [i for i in cands if match_filter(terms, info[i])]
    if not ids:
        raise ValueError("no device matches the targets/filter")
    return ids


def cmd_start(a):
    out = sys.stdout
    load_release(a.release, a.base_url)       # fail early, before touching the broker
    ids = select_targets(a, out)
    params = build_params(a, len(ids))
    wave_of = []
    for w, n in enumerate(params["groups"]):
        wave_of += [w] * n
    if a.dry_run:
        out.write("plan for %d devices: groups %s\n" % (len(ids), params["groups"]))
        for w, n in enumerate(params["groups"]):
            members = [i for i, ww in zip(ids, wave_of) if ww == w]
            out.write("  group %d (%d): %s%s\n" % (w, n, ", ".join(members[:8]), " ..." if n > 8 else ""))
        return 0
    db = _db(a, create=True)
    overlap = db.active_for(ids)
    if overlap and not a.allow_overlap:
        raise ValueError(rolloutdb.overlap_message(overlap))
    # connect before the rollout exists: a broker that is down leaves no "running" rollout behind
    bus = Bus(params["mqtt"], TOPICS)
    try:
        rid = db.create(params, list(zip(ids, wave_of)), allow_overlap=a.allow_overlap)
    except BaseException:
        bus.close()
        raise
    if overlap:
        out.write("warning: --allow-overlap: %d target(s) also in another active rollout\n" % len(overlap))
    out.write("rollout %d: %s %s to %d devices, groups %s (db %s)\n"
              % (rid, params["release"]["board"], params["release"]["version"], len(ids), params["groups"],
                 db.path))
    out.flush()
    return _drive(db, rid, a, bus=bus)


def _drive(db, rid, a, mqtt=None, bus=None):
    ctl = Controller(db, rid, mqtt_url=mqtt, progress=a.progress, tick_s=0.05, bus=bus)
    try:
        code = ctl.run()
    except KeyboardInterrupt:
        sys.stdout.write("\ninterrupted: `evsectl rollout resume %d` continues where it stood\n" % rid)
        return 130
    s = ctl.summary()
    if ctl.prog.mode != "bars":      # bars: the last frame already shows it
        sys.stdout.write("\n".join(render_lines(s)) + "\n")
    sys.stdout.write("rollout %d %s%s\n" % (rid, s["state"], (": " + s["reason"]) if s["reason"] else ""))
    if s["state"] in rolloutdb.FINAL:
        from tools import report
        rd = a.report_dir if getattr(a, "report_dir", None) else ctl.p.get("report_dir") or "build"
        js, html = report.write(db, rid, rd, peak_rss_kb=_peak_rss_kb())
        sys.stdout.write("report: %s  %s\n" % (js, html))
    return code


def _peak_rss_kb():
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None


def cmd_status(a):
    db = _db(a)
    if a.id is None:
        rows = db.list()
        if a.json:
            print(json.dumps([{"id": r["id"], "state": r["state"], "reason": r["reason"],
                               "version": r["params"]["release"]["version"], "counts": db.counts(r["id"])}
                              for r in rows], indent=2))
            return 0
        if not rows:
            print("no rollouts in %s" % db.path)
        for r in rows:
            c = db.counts(r["id"])
            print("%4d  %-9s %-8s %5d devices: %s%s" % (
                r["id"], r["state"], r["params"]["release"]["version"], sum(c.values()),
                ", ".join("%s %d" % kv for kv in sorted(c.items())),
                ("  (%s)" % r["reason"]) if r["reason"] else ""))
        return 0
    from tools import report
    rep = report.build(db, a.id)
    if a.json:
        print(json.dumps(rep["summary"], indent=2))
        return 0
    for line in render_lines(rep["summary"]):
        print(line)
    owner = db.owner_alive(a.id)
    print("  controller: %s" % ("running (pid %d on %s)" % owner if owner else "not running"))
    return 0


def cmd_pause(a):
    db = _db(a)
    db.set_state(a.id, "paused", a.reason, allowed_from=("running",))
    live = db.owner_alive(a.id)
    print("rollout %d paused: no new devices start; those running finish%s"
          % (a.id, " (controller pid %d picks it up)" % live[0] if live else ""))
    return 0


def cmd_abort(a):
    db = _db(a)
    db.set_state(a.id, "aborted", a.reason or "aborted by operator", allowed_from=rolloutdb.ACTIVE)
    live = db.owner_alive(a.id)
    print("rollout %d aborted%s" % (a.id, " (controller pid %d stops)" % live[0] if live else ""))
    if not live:
        now = time.time()
        db.save(a.id, [(d["device"], {"state": "skipped", "reason": "rollout aborted", "finished_at": now})
                       for d in db.devices(a.id) if d["state"] in ("pending", "waiting")], heartbeat=False)
    return 0


def cmd_resume(a):
    db = _db(a)
    r = db.get(a.id)
    if r["state"] in rolloutdb.FINAL:
        raise ValueError("rollout %d is %s: nothing to resume" % (a.id, r["state"]))
    if r["state"] == "paused":
        db.set_state(a.id, "running", None, allowed_from=("paused",))
    live = db.owner_alive(a.id)
    if live:
        print("rollout %d resumed (controller pid %d picks it up)" % (a.id, live[0]))
        return 0
    print("rollout %d: no controller running; continuing here" % a.id)
    sys.stdout.flush()
    return _drive(db, a.id, a, mqtt=a.mqtt)


def cmd_report(a):
    from tools import report
    db = _db(a)
    js, html = report.write(db, a.id, a.out)
    print("report: %s  %s" % (js, html))
    return 0


def build_parser(prog="evsectl rollout"):
    env_mqtt = os.environ.get("MQTT_URL") or "mqtt://127.0.0.1:1883"
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  evsectl rollout start --release build/evse-sim-1.1.0.json --base-url http://10.0.0.5:8000/ \\\n"
               "      --filter board=sim,version<1.1.0 --canary 2 --waves 10%,50%,100% \\\n"
               "      --success-threshold 90% --error-threshold 20% --max-concurrent 50 \\\n"
               "      --install-window 22:00-06:00\n"
               "  evsectl rollout status 3\n  evsectl rollout pause 3\n  evsectl rollout resume 3\n"
               "  evsectl rollout report 3 --out build/\n\nMore: docs/rollout.md")
    p.add_argument("--db", default=None, help="state database (default: $EVSE_ROLLOUT_DB or build/rollouts.db)")
    sub = p.add_subparsers(dest="sub", metavar="SUBCOMMAND")
    sub.required = True

    def with_db(s):
        s.add_argument("--db", default=argparse.SUPPRESS, help="state database (as before the subcommand)")
        return s

    def common_run(s):
        s.add_argument("--progress", choices=("auto", "bars", "lines", "none"), default="auto",
                       help="live output: bars redrawn on a terminal, one line per event otherwise "
                            "(auto), or none (summary only)")
        s.add_argument("--report-dir", default=None, help="where the final report goes (default build/)")

    s = with_db(sub.add_parser("start", help="create a rollout and drive it to the end",
                       description="Create a rollout (targets, groups, thresholds, window) in the state DB and "
                                   "run the controller until the rollout is finished, stopped or aborted.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    s.add_argument("--release", required=True, help="release JSON written by `evsectl release` (version, board, image)")
    s.add_argument("--base-url", required=True, help="URL the devices download the image from "
                                                     "(the image file name is appended)")
    s.add_argument("--targets", help="device ids: id1,id2,... or @FILE (one per line)")
    s.add_argument("--filter", help="select among devices seen on evse/+/status: comma-separated terms "
                                    "KEY OP VALUE, KEY in id (glob), version (= != < <= > >=), board, slot, "
                                    "online; e.g. board=sim,version<1.1.0")
    s.add_argument("--discover-s", type=float, default=2.0, help="seconds to collect retained statuses for --filter")
    s.add_argument("--canary", default="0", help="canary group size: a count or a percentage (0: none)")
    s.add_argument("--waves", default="100%", help="cumulative wave points after the canary, counts or "
                                                   "percentages of all targets, e.g. 10%%,30%%,100%%")
    s.add_argument("--success-threshold", default="100%", help="share of a group that must reach Installed "
                                                               "before the next group starts")
    s.add_argument("--error-threshold", default="0%", help="share of a group that may fail; more stops "
                                                           "the rollout (running devices finish)")
    s.add_argument("--max-concurrent", type=int, default=None, help="devices downloading at once (default: no limit)")
    s.add_argument("--install-window", default=None, help="HH:MM-HH:MM device local time (set on each device "
                                                          "with set_config install_window before the update)")
    s.add_argument("--install-at", default=None, help="installDateTime (ISO 8601): no install before it")
    s.add_argument("--retrieve-at", default=None, help="retrieveDateTime (ISO 8601; default: now)")
    s.add_argument("--retries", type=int, default=3, help="download retries of the device")
    s.add_argument("--retry-interval", type=int, default=60, help="seconds between download retries")
    s.add_argument("--device-timeout", type=float, default=900.0,
                   help="seconds without any news from a device (or offline at its turn) before it counts failed")
    s.add_argument("--schedule-timeout", type=float, default=86400.0,
                   help="the same while the device waits (DownloadScheduled, InstallScheduled)")
    s.add_argument("--ack-timeout", type=float, default=30.0,
                   help="seconds without any trace of a command (reply or firmware status) before it is "
                        "sent again (same id and requestId; at most %d times)" % MAX_ATTEMPTS)
    s.add_argument("--mqtt", default=env_mqtt, help="broker URL mqtt://user:password@host:port (default $MQTT_URL)")
    s.add_argument("--dry-run", action="store_true", help="print the plan (groups) and exit")
    s.add_argument("--allow-overlap", action="store_true",
                   help="start even though some targets are in another active rollout (default: refused)")
    common_run(s)
    s.set_defaults(fn=cmd_start)

    s = with_db(sub.add_parser("status", help="list rollouts, or show one",
                       description="Without ID: every rollout in the DB. With ID: waves, statuses, failures."))
    s.add_argument("id", type=int, nargs="?")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=cmd_status)

    s = with_db(sub.add_parser("pause", help="stop starting devices (running ones finish)",
                       description="Mark the rollout paused in the DB. A running controller stops starting "
                                   "devices; devices already updating finish and are tracked."))
    s.add_argument("id", type=int)
    s.add_argument("--reason", default=None)
    s.set_defaults(fn=cmd_pause)

    s = with_db(sub.add_parser("resume", help="continue a paused or interrupted rollout",
                       description="Mark the rollout running. When no controller holds it (paused without "
                                   "one, or after a crash / kill), run the controller here: it re-reads every "
                                   "device's retained status and never re-sends a command a device has shown "
                                   "it received."))
    s.add_argument("id", type=int)
    s.add_argument("--mqtt", default=None, help="broker URL (default: the one the rollout was started with)")
    common_run(s)
    s.set_defaults(fn=cmd_resume)

    s = with_db(sub.add_parser("abort", help="end the rollout now (final)",
                       description="Mark the rollout aborted: nothing more is sent; devices already updating "
                                   "cannot be called back (OCPP has no cancel) and are left to finish on their own."))
    s.add_argument("id", type=int)
    s.add_argument("--reason", default=None)
    s.set_defaults(fn=cmd_abort)

    s = with_db(sub.add_parser("report", help="write the JSON and HTML report",
                       description="Write rollout-ID.json and rollout-ID.html (self-contained, SVG chart)."))
    s.add_argument("id", type=int)
    s.add_argument("--out", default="build", help="output directory")
    s.set_defaults(fn=cmd_report)
    return p


def main(argv=None):
    p = build_parser()
    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except (ConnectionError, RuntimeError) as e:     # the broker, another controller: exit 1
        sys.stderr.write("evsectl rollout %s: error: %s\n" % (a.sub, e))
        return 1
    except (ValueError, OSError) as e:               # bad input or a refusal: one line, exit 2
        sys.stderr.write("evsectl rollout %s: error: %s\n" % (a.sub, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
