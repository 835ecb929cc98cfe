"""`make demo`: a fleet of virtual chargers gets a staged firmware update.

The story, told as it happens:
  1. a broker (embedded amqtt, or $MQTT_URL), a signing key, releases 1.0.0
     and 1.1.0 built and signed with imgtool;
  2. five virtual boards with blank flash; `evsectl deploy` puts 1.0.0 on each
     over its pty with mpremote; one board (vb-3) has a damaged pilot circuit;
  3. vehicles charge on two boards;
  4. `evsectl rollout` rolls 1.1.0 out: a canary, then two waves; installs on
     the charging boards wait for their sessions to end; vb-3's trial boot
     fails its CP self-test and the board rolls back to 1.0.0 on its own;
  5. the fleet table and the rollout report.

Everything runs on this machine: MicroPython unix port boards, a real broker,
real HTTP downloads, real signatures. Work files go to build/demo/.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from tools import keys, release
from tools.netutil import free_port, wait_port
from tools.mpunix import ROOT

DEMO_DIR = os.path.join(ROOT, "build", "demo")
BOARDS = ["vb-1", "vb-2", "vb-3", "vb-4", "vb-5"]
CHARGING = ["vb-2", "vb-4"]      # sessions run on these while the rollout goes
DAMAGED = "vb-3"                 # pilot shorted: the new firmware's trial self-test fails
T0 = time.time()
_print_lock = threading.Lock()


def say(who, text):
    with _print_lock:
        print("[%5.1fs] %-8s %s" % (time.time() - T0, who, text), flush=True)


# -- the broker -----------------------------------------------------------------
def start_broker():
    """(url, host, port, process or None, user, password): $MQTT_URL, else an
    embedded amqtt."""
    url = os.environ.get("MQTT_URL")
    if url:
        from tools.rollout import parse_mqtt_url
        host, port, user, password = parse_mqtt_url(url)
        say("broker", "using %s" % (url.replace(":%s@" % password, ":***@") if password else url))
        return url, host, port, None, user, password
    port = free_port()
    cfg = os.path.join(DEMO_DIR, "amqtt.yaml")
    with open(cfg, "w") as f:
        f.write("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:%d\n"
                "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                "    allow_anonymous: true\n" % port)
    exe = os.path.join(os.path.dirname(sys.executable), "amqtt")
    log = open(os.path.join(DEMO_DIR, "broker.log"), "w")
    proc = subprocess.Popen([exe, "-c", cfg], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    if not wait_port(port):
        raise RuntimeError("the embedded broker (amqtt) did not start; see %s" % log.name)
    say("broker", "embedded amqtt on 127.0.0.1:%d (set MQTT_URL to use your own)" % port)
    return "mqtt://127.0.0.1:%d" % port, "127.0.0.1", port, proc, None, None


# -- watching the fleet on MQTT --------------------------------------------------
class Narrator:
    """Subscribes to the fleet's topics and tells what each board does."""

    def __init__(self, host, port, user=None, password=None):
        import paho.mqtt.client as mqtt
        self.seen = {}
        self.fw = {}
        self.versions = {}
        self.events = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-narrator")
        self.c.on_message = self._msg
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(
            [("evse/+/firmware", 1), ("evse/+/status", 1), ("evse/+/session", 1)])
        if user:
            self.c.username_pw_set(user, password)
        self.c.connect(host, port)
        self.c.loop_start()

    def _msg(self, c, u, m):
        parts = m.topic.split("/")
        if len(parts) != 3:
            return
        dev, kind = parts[1], parts[2]
        try:
            d = json.loads(m.payload or b"null")
        except ValueError:
            return
        if not isinstance(d, dict):
            return
        with self.cond:
            if kind == "firmware":
                st = d.get("status")
                if self.fw.get(dev) == st or (st == "Idle" and dev not in self.fw):
                    return
                self.fw[dev] = st
                self.events.append((dev, st))
                extra = ""
                if st == "Downloading" and d.get("progress") not in (None, 0):
                    return
                if st == "InstallScheduled":
                    extra = "  (a charging session is running: the install waits for it)"
                if d.get("reason"):
                    extra = "  reason: %s" % d["reason"]
                say(dev, "firmware %s%s" % (st, extra))
            elif kind == "status":
                v, was = d.get("version"), self.versions.get(dev)
                if d.get("online") and v and v != was:
                    self.versions[dev] = v
                    trial = " on trial" if d.get("trial") else ""
                    why = " (%s)" % d["reason"] if d.get("reason") not in (None, "power-on", "power") else ""
                    if was:
                        say(dev, "now running %s%s, slot %s%s" % (v, trial, d.get("slot"), why))
            elif kind == "session" and not m.retain:
                key = (dev, d.get("seq"))
                if key in self.seen:     # at-least-once delivery: a resend after a reboot
                    return
                self.seen[key] = True
                say(dev, "charging session finished: %.2f kWh, reason %s" % (
                    (d.get("energy_wh") or 0) / 1000.0, d.get("reason")))
            self.cond.notify_all()

    def wait(self, pred, timeout):
        end = time.time() + timeout
        with self.cond:
            while not pred():
                left = end - time.time()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _retained(host, port, user, password, ids, wait_s=1.0, until=None):
    """{topic: payload} of the retained messages of these devices (evse/<id>/#
    and Home Assistant discovery homeassistant/+/<id>/#). until(found): keep
    collecting (at most 5 s) until it is true."""
    import paho.mqtt.client as mqtt
    found, lock = {}, threading.Lock()
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-clean-%d" % os.getpid())
    if user:
        c.username_pw_set(user, password)

    def on_msg(cl, u, m):
        if m.retain:
            with lock:
                if m.payload:
                    found[m.topic] = m.payload
                else:
                    found.pop(m.topic, None)
    c.on_message = on_msg
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(
        [("evse/%s/#" % i, 0) for i in ids] + [("homeassistant/+/%s/#" % i, 0) for i in ids])
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(host, port)
    c.loop_start()
    try:
        subscribed.wait(5)
        end = time.time() + (5.0 if until else wait_s)
        time.sleep(wait_s)
        while until and time.time() < end:
            with lock:
                if until(dict(found)):
                    break
            time.sleep(0.1)
        with lock:
            return dict(found), c
    except BaseException:
        c.loop_stop()
        raise


def clear_retained(host, port, user, password, ids):
    """Remove what the demo's devices left retained on a broker that is not
    the demo's own (their status, state, firmware, discovery configs): an
    empty retained message per topic, after the last wills arrived. Returns
    the number of topics cleared."""
    def all_offline(found):
        for i in ids:
            try:
                if json.loads(found.get("evse/%s/status" % i) or b"{}").get("online"):
                    return False
            except ValueError:
                pass
        return True
    found, c = _retained(host, port, user, password, ids, 0.5, until=all_offline)
    try:
        infos = [c.publish(t, b"", qos=1, retain=True) for t in sorted(found)]
        for inf in infos:
            inf.wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()
    left, c2 = _retained(host, port, user, password, ids, 0.5)
    c2.disconnect()
    c2.loop_stop()
    if left:
        raise RuntimeError("retained messages left on the broker: %s" % ", ".join(sorted(left)))
    return len(found)


# -- the demo ----------------------------------------------------------------------
def main(argv=None):
    """Run the demo; 0 when the story went as told (see run()).
    BACKEND=ocpp (`make demo BACKEND=ocpp`): the OCPP story, tools/demo_ocpp.py."""
    if os.environ.get("BACKEND") == "ocpp":
        from tools import demo_ocpp
        return demo_ocpp.main(argv)
    return 0 if run()["ok"] else 1


def run(demo_dir=None):
    """The demo. Returns what happened: {"ok", "rollout_exit", "boards":
    {id: get() of the board at the end}, "sessions": [(board, kWh)], "events",
    "report"}. ok: the rollout finished, every healthy board runs 1.1.0
    confirmed, the damaged one rolled back to 1.0.0 on its own and says why."""
    global DEMO_DIR
    if demo_dir:
        DEMO_DIR = demo_dir
    from tools import deploy, monitor, serve
    from tools.vboard import VBoard

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    os.makedirs(DEMO_DIR)
    print("evse-agent demo: five virtual chargers, a signed release, a staged rollout\n", flush=True)
    procs, boards, narrator, server = [], [], None, None
    own = None         # (host, port, user, password) of the user's broker ($MQTT_URL)
    try:
        url, host, port, broker, user, password = start_broker()
        if broker is None:
            own = (host, port, user, password)
        if broker:
            procs.append(broker)

        # releases
        pem, pub, raw = keys.keygen(os.path.join(DEMO_DIR, "keys", "release"))
        say("release", "signing key %s (key hash %s)" % (os.path.relpath(pem, ROOT), keys.keyhash(raw).hex()[:16]))
        out = os.path.join(DEMO_DIR, "releases")
        rel = {}
        for v, sc in (("1.0.0", 1), ("1.1.0", 2)):
            img, js, d = release.build(pem, v, "sim", security_counter=sc, out=out)
            rel[v] = js
            say("release", "%s: %s, %d bytes, %d files as .mpy, security counter %d; imgtool verify ok" % (
                v, os.path.basename(img), d["size"], d["files"] or 0, sc))
        server, http_port = serve.serve(out)
        say("http", "release server on http://127.0.0.1:%d/ (Range requests, resumable)" % http_port)

        narrator = Narrator(host, port, user, password)

        # boards: blank flash, deploy 1.0.0 over the pty with mpremote
        extra = os.path.join(DEMO_DIR, "board-config.json")
        with open(extra, "w") as f:
            json.dump({"telemetry_ms": 5000, "health": {"trial_s": 10}}, f)
        for name in BOARDS:
            d = os.path.join(DEMO_DIR, "boards", name)
            os.makedirs(d)
            b = VBoard(d, id=name, blank=True).start()
            boards.append(b)
            t = time.time()
            deploy.deploy(b.pty, rel["1.0.0"], [pub], name, board="sim", broker="%s:%d" % (host, port),
                          user=user, password=password, config=extra, log=lambda *a, **k: None)
            b.wait_for({"version": "1.0.0"}, timeout=60, what="1.0.0 running")
            say(name, "deployed 1.0.0 over %s with mpremote in %.1fs; running, slot %s" % (
                b.pty, time.time() - t, b.get().get("slot")))
        by = dict(zip(BOARDS, boards))
        by[DAMAGED].control("short_cp", on=True)
        say(DAMAGED, "its control-pilot line is damaged (shorted to PE): state %s, fault %s" % (
            by[DAMAGED].get().get("state"), by[DAMAGED].get().get("fault")))

        # charging sessions
        for name in CHARGING:
            b = by[name]
            b.control("plug", state="B")
            b.control("ev_state", state="C")
        for name in CHARGING:
            b = by[name]
            g = b.wait_for(lambda b=b: _charging(b.get()), timeout=30, what="charging")
            say(name, "vehicle charging: state %s, %d A offered, contactor closed" % (
                g["state"], g.get("offered_a") or 0))

        # the rollout, in its own process (the operator's terminal)
        say("operator", "evsectl rollout start: 1.1.0 to %d boards, canary 1, waves 50%%/100%%" % len(BOARDS))
        cmd = [sys.executable, "-m", "tools.rollout", "--db", os.path.join(DEMO_DIR, "rollouts.db"),
               "start", "--release", rel["1.1.0"], "--base-url", "http://127.0.0.1:%d/" % http_port,
               "--targets", ",".join(BOARDS), "--canary", "1", "--waves", "50%,100%",
               "--success-threshold", "50%", "--error-threshold", "50%", "--retry-interval", "5",
               "--device-timeout", "240", "--mqtt", url, "--progress", "lines",
               "--report-dir", DEMO_DIR]
        ro = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        procs.append(ro)
        relay = threading.Thread(target=_relay_output, args=(ro,), daemon=True)
        relay.start()

        # sessions end a few seconds after their board scheduled the install
        pending = set(CHARGING)
        end = time.time() + 300
        while pending and time.time() < end and ro.poll() is None:
            for name in list(pending):
                if narrator.fw.get(name) == "InstallScheduled":
                    time.sleep(4)
                    b = by[name]
                    b.control("ev_state", state="B")
                    b.control("unplug")
                    say(name, "driver unplugs: the session ends, the install may go on")
                    pending.discard(name)
            time.sleep(0.2)
        rc = ro.wait(timeout=max(10, end - time.time()))
        relay.join(timeout=5)
        say("operator", "rollout finished (exit %d)" % rc)
        time.sleep(1)

        # the end: fleet table, the damaged board, the report
        print("\nThe fleet now (evsectl monitor --once):", flush=True)
        monitor.main(["--once", "--mqtt", url])
        g = by[DAMAGED].get()
        print("\n%s rolled back on its own: running %s from slot %s, boot reason %s" % (
            DAMAGED, g.get("version"), g.get("slot"), g.get("boot_reason")))
        reports = sorted(f for f in os.listdir(DEMO_DIR) if f.startswith("rollout-"))
        for f in reports:
            print("report: %s" % os.path.relpath(os.path.join(DEMO_DIR, f), ROOT))
        final = {name: by[name].get() for name in BOARDS}
        healthy = all(final[n].get("version") == "1.1.0" and not final[n].get("trial")
                      for n in BOARDS if n != DAMAGED)
        rolled_back = (g.get("version") == "1.0.0" and g.get("slot") == "a"
                       and "cp_selftest" in str(g.get("boot_reason")))
        ok = rc == 0 and healthy and rolled_back
        if not ok:
            print("\nthe demo did not go as told: rollout exit %d, healthy boards on 1.1.0: %s, "
                  "%s rolled back: %s" % (rc, healthy, DAMAGED, rolled_back))
        return {"ok": ok, "rollout_exit": rc, "boards": final, "events": list(narrator.events),
                "sessions": list(narrator.seen), "report": [os.path.join(DEMO_DIR, f) for f in reports]}
    finally:
        if narrator:
            narrator.close()
        for b in boards:
            try:
                b.stop()
            except Exception:
                pass
        if own is not None:
            try:
                n = clear_retained(*own, ids=BOARDS)
                say("broker", "cleared the %d retained messages of %s from your broker"
                    % (n, ", ".join(BOARDS)))
            except Exception as e:   # noqa: BLE001 - said, not hidden
                say("broker", "could not clear the demo's retained messages: %s" % e)
        if server:
            server.shutdown()
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM) if p.args and "amqtt" in str(p.args[0]) else p.terminate()
                    p.wait(timeout=5)
                except Exception:
                    p.kill()


def _charging(g):
    return g if g.get("relay") and (g.get("current_a") or 0) > 1 else None


def _relay_output(proc):
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            say("rollout", line)


if __name__ == "__main__":
    sys.exit(main())
