"""OCPP link faults, in virtual time: the real agent (SimBoard) in the unix
port, its clock moved 50 ms per control period (about 1 ms of real time)
while the network runs in real time (the CSMS-killed case runs in real time). CSMS down at boot (refused port: capped backoff with jitter), a
stalled socket (TCP accepted, no upgrade: connect timeout), a CSMS that
never answers a CALL (response timeout, BootNotification retried), a CSMS
killed mid-session (reconnect). The agent's control loop keeps running and
counts no error; the longest control period (real time) is printed."""
import asyncio
import json
import os
import socket
import subprocess
import threading

from websockets.asyncio.server import serve

from tests.prep.csms import CSMS
from tools import mpunix

SCRIPT = r"""
import sys, time, json
from firmware.hal.sim import SimBoard
from firmware.agent import Agent
from firmware import config
root, url, vsecs, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = config.merge(config.DEFAULTS, {"device_id": "flt1", "mqtt": {"host": ""}})
cfg["ocpp"]["url"] = url
b = SimBoard()
a = Agent(b, cfg, root, {"version": "0.1.0", "slot": "a"}, health=None)
a.start()
oc = a.ocpp
now = b.ticks_ms()
worst = 0
backoffs = []
fails = 0
states = []
for i in range(vsecs * 1000 // step):
    b.advance(step)
    now = b.ticks_ms()
    t0 = time.ticks_us()
    a.tick(now)
    dt = time.ticks_diff(time.ticks_us(), t0)
    if dt > worst:
        worst = dt
    if oc.failures != fails:
        fails = oc.failures
        if fails:
            backoffs.append(oc.backoff_ms)
    if not states or states[-1] != oc.state:
        states.append(oc.state)
    if i == 4000 // step:
        b.plug("C", max_current_a=16)
    time.sleep_ms(1 if step > 20 else step)
print("@@R " + json.dumps({"worst_us": worst, "backoffs": backoffs, "attempts": oc.attempts,
      "timeouts": oc.timeouts, "error": oc.last_error, "errors": a.errors, "states": states,
      "state": oc.state, "queued": len(oc.txq), "relay": a._relay}))
"""


def _mpy(tmp_path):
    from tools import release
    d = tmp_path / "mpy"
    if not d.exists():
        release.compile_tree(os.path.join(mpunix.ROOT, "firmware"), str(d), use_mpy=True)
    return str(d)


def _run(tmp_path, url, vsecs, name, step=50):
    p = tmp_path / "flt.py"
    p.write_text(SCRIPT)
    root = tmp_path / name
    root.mkdir()
    r = subprocess.run(mpunix.argv(str(p), str(root) + "/", url, str(vsecs), str(step), heap="256K"),
                       env=mpunix.env(_mpy(tmp_path)), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads([x for x in r.stdout.splitlines() if x.startswith("@@R ")][-1][4:])
    print("\n%s: worst control period %.1f ms, attempts %d, states %s" % (
        name, res["worst_us"] / 1000, res["attempts"], res["states"]))
    assert res["errors"] == 0, r.stdout
    return res


def scenario_down(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                    # nothing listens there
    return _run(tmp_path, "ws://127.0.0.1:%d/ocpp" % port, 300, "down")


def test_csms_down_at_boot_backoff_is_capped_with_jitter(tmp_path):
    res = scenario_down(tmp_path)
    bo = res["backoffs"]
    assert len(bo) >= 6 and res["state"] in ("offline", "connecting")
    for k, d in enumerate(bo):
        full = min(1000 << k, 60000)
        assert max(1000, full // 2) <= d <= full, (k, d)
    assert res["relay"] is True, "charging goes on without the CSMS"
    assert res["queued"] >= 1, "the StartTransaction waits on flash"


def scenario_stalled(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])   # accepted, never read, never answered
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        res = _run(tmp_path, "ws://127.0.0.1:%d/ocpp" % srv.getsockname()[1], 40, "stalled")
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        srv.close()
    res["held"] = len(held)
    return res


def test_stalled_socket_times_out_the_upgrade(tmp_path):
    res = scenario_stalled(tmp_path)
    assert res["error"] == "no WebSocket upgrade within 10000 ms"
    assert res["attempts"] >= 2 and res["held"] >= 2


def scenario_silent(tmp_path):
    got = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}

    async def handler(ws):
        async for m in ws:
            got.append(json.loads(m)[2])        # read, never answered

    async def main():
        box["stop"] = asyncio.Event()
        async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as srv:
            box["port"] = srv.sockets[0].getsockname()[1]
            ready.set()
            await box["stop"].wait()
    t = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        res = _run(tmp_path, "ws://127.0.0.1:%d/ocpp" % box["port"], 90, "silent")
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        t.join(5)
    res["got"] = got
    return res


def test_csms_that_never_answers_a_call(tmp_path):
    res = scenario_silent(tmp_path)
    got = res["got"]
    assert res["timeouts"] >= 2 and res["state"] == "booting"
    assert got.count("BootNotification") >= 2 and set(got) == {"BootNotification"}


def scenario_killed(tmp_path):
    cs = CSMS(interval=300).start()

    def restart():
        import time
        cs.tx_id("local", 30)
        time.sleep(0.5)                         # its answer is out (a Start the CSMS got but never
        cs.stop()                               # answered is sent again: at-least-once)
        time.sleep(2)
        cs.start()
    t = threading.Thread(target=restart, daemon=True)
    t.start()
    try:
        res = _run(tmp_path, cs.url, 16, "killed", step=20)   # real time: the CSMS restarts
    finally:
        t.join(10)
        cs.stop()
    res["cs"] = cs
    return res


def test_csms_killed_mid_session_the_link_comes_back(tmp_path):
    res = scenario_killed(tmp_path)
    cs = res["cs"]
    assert cs.errors == []
    assert res["state"] == "accepted" and res["queued"] == 0
    assert res["states"][:2] == ["connecting", "booting"] and "offline" in res["states"]
    assert len(cs.calls("StartTransaction", "flt1")) == 1
