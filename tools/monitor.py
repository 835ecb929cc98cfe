"""`evsectl monitor`: a live table of the fleet from the retained MQTT topics
(evse/+/status, evse/+/state, evse/+/firmware) and the periodic telemetry:
online, version, slot (trial), charging state, the running session's
energy (from telemetry `session_wh`, live; `state` has it only as of its last
change), firmware status with progress or reason. An offline device keeps
the version and slot it last reported (its will carries them; the monitor
also remembers them).

On a terminal the table is redrawn every --interval seconds; otherwise (or
with --once) it is printed as plain text. `--once` prints one snapshot once
the retained messages have arrived, and exits.
"""
import argparse
import json
import os
import sys
import time

from tools import rollout

COLUMNS = ("DEVICE", "ONLINE", "VERSION", "SLOT", "STATE", "SESSION", "FIRMWARE")


class Fleet:
    """What the monitor knows about each device (latest retained payloads)."""

    def __init__(self):
        self.devices = {}
        self._n = 0

    def apply(self, topic, payload):
        dev, kind = rollout.split_topic(topic)
        if dev is None or kind not in ("status", "state", "firmware", "telemetry"):
            return
        d = rollout.decode(payload)
        if d is None:
            return
        k = self.devices.setdefault(dev, {})
        if kind == "status" and not d.get("online"):
            old = k.get("status") or {}
            for f in ("version", "slot", "failed_version"):
                if d.get(f) is None and old.get(f) is not None:
                    d[f] = old[f]          # offline: what it ran last stays known
            d["trial"] = False
        self._n += 1
        k[kind] = d
        k[kind + "#"] = self._n

    def stale_sessions(self):
        """Devices online with a session but no telemetry newer than their state."""
        return [d for d, k in self.devices.items()
                if (k.get("status") or {}).get("online") and isinstance((k.get("state") or {}).get("session"), dict)
                and k.get("telemetry#", 0) < k.get("state#", 0)]

    def rows(self, terms=None):
        out = []
        for dev in sorted(self.devices):
            k = self.devices[dev]
            st, cs, fw = k.get("status") or {}, k.get("state") or {}, k.get("firmware") or {}
            online = bool(st.get("online"))
            info = {"id": dev, "online": online, "version": st.get("version"), "slot": st.get("slot")}
            if terms and not rollout.match_filter(terms, info):
                continue
            slot = st.get("slot") or "-"
            if st.get("trial"):
                slot += " (trial)"
            state = cs.get("state") or "-"
            if cs.get("fault"):
                state += " " + cs["fault"]
            elif cs.get("relay"):
                state += " %sA" % cs.get("current_a")
            sess = cs.get("session")
            tel = k.get("telemetry") or {}
            if isinstance(sess, dict):
                wh = sess.get("energy_wh")
                if tel.get("session_wh") is not None and k.get("telemetry#", 0) > k.get("state#", 0):
                    wh = tel["session_wh"]        # newer than the state: the live figure
                sess = "%s Wh" % (round(wh, 1) if isinstance(wh, float) else wh)
            else:
                sess = "-"
            fws = fw.get("status") or "-"
            if fw.get("progress") is not None and fws == "Downloading":
                fws += " %s%%" % fw["progress"]
            if fw.get("reason"):
                fws += " (%s)" % fw["reason"]
            ver = st.get("version") or "-"
            if st.get("failed_version"):
                ver += " (%s failed)" % st["failed_version"]
            out.append({"device": dev, "online": "yes" if online else "no", "version": ver, "slot": slot,
                        "state": state, "session": sess, "firmware": fws})
        return out


def table(rows):
    keys = [c.lower() for c in COLUMNS]
    widths = [max([len(c)] + [len(str(r[k])) for r in rows]) for c, k in zip(COLUMNS, keys)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)).rstrip())
    online = sum(1 for r in rows if r["online"] == "yes")
    versions = {}
    for r in rows:
        v = r["version"].split(" ")[0]
        versions[v] = versions.get(v, 0) + 1
    lines.append("%d devices, %d online; versions: %s" % (
        len(rows), online, ", ".join("%s %d" % kv for kv in sorted(versions.items())) or "-"))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="evsectl monitor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  evsectl monitor\n  evsectl monitor --once --filter version<1.1.0\n"
               "  evsectl monitor --mqtt mqtt://backend:pw@10.0.0.2:1883 --interval 2")
    p.add_argument("--mqtt", default=os.environ.get("MQTT_URL") or "mqtt://127.0.0.1:1883",
                   help="broker URL mqtt://user:password@host:port (default $MQTT_URL or mqtt://127.0.0.1:1883)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true", help="with --once: the rows as JSON")
    p.add_argument("--filter", default=None, help="only devices matching, e.g. version<1.1.0,online=true "
                                                  "(keys: id, version, slot, online)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between redraws (default 1)")
    p.add_argument("--wait", type=float, default=3.0,
                   help="at most this many seconds to collect the retained topics (default 3)")
    a = p.parse_args(argv)
    try:
        terms = rollout.parse_filter(a.filter) if a.filter else None
        if terms and any(k == "board" for k, _, _ in terms):
            raise ValueError("the monitor cannot filter by board (the status topic does not carry it)")
        if a.interval <= 0 or a.wait <= 0:
            raise ValueError("--interval and --wait must be positive")
        bus = rollout.Bus(a.mqtt, ["evse/+/status", "evse/+/state", "evse/+/firmware", "evse/+/telemetry"])
    except ValueError as e:            # bad input: one line, exit 2
        sys.stderr.write("evsectl monitor: error: %s\n" % e)
        return 2
    except ConnectionError as e:
        sys.stderr.write("evsectl monitor: error: %s\n" % e)
        return 1
    fleet = Fleet()
    out = sys.stdout
    try:
        t_end = time.time() + a.wait
        bus.settle(quiet_s=min(0.3, a.wait), max_s=a.wait)
        for topic, payload, _ in bus.drain():
            fleet.apply(topic, payload)
        while a.once and fleet.stale_sessions() and time.time() < t_end:
            time.sleep(0.05)          # a session runs: its live energy comes with the next telemetry
            for topic, payload, _ in bus.drain():
                fleet.apply(topic, payload)
        if a.once:
            rows = fleet.rows(terms)
            if a.json:
                out.write(json.dumps(rows, indent=1) + "\n")
            else:
                out.write("\n".join(table(rows)) + "\n")
            return 0
        tty = out.isatty()
        drawn = 0
        while True:
            for topic, payload, _ in bus.drain():
                fleet.apply(topic, payload)
            lines = [time.strftime("%H:%M:%S") + "  evsectl monitor (Ctrl-C to quit)"] + table(fleet.rows(terms))
            if tty:
                if drawn:
                    out.write("\x1b[%dF\x1b[J" % drawn)
                drawn = len(lines)
            out.write("\n".join(lines) + "\n")
            out.flush()
            time.sleep(a.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        bus.close()


if __name__ == "__main__":
    sys.exit(main())
