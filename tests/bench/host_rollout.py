"""Rollout controller at fleet scale (CPython): 1,000 and 10,000 stand-in
devices (tools/fleet.py, one MQTT connection each, spread over helper
processes) against one mosquitto; the controller is `python -m tools.rollout
start` as its own process (canary 1 %, waves 10 %, 50 %, 100 %, success
threshold 95 %, at most 2,000 concurrent downloads).

Figures: time from start to all devices reported (controller process wall
time, and the rollout's own duration from the report), the controller's peak
RSS (ru_maxrss, written into the report), and how both grow from 1k to 10k.
Every device must have received exactly one update command.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.prep import broker as B  # noqa: E402

PER_PROC = 2500
SIZES = (1000, 10000)


def report(name, value, unit="", aim=""):
    if isinstance(value, float):
        value = "%.1f" % value
    print("BENCH %s|%s|%s|%s" % (name, value, unit, aim), flush=True)


def start_fleets(port, prefix, n):
    procs = []
    env = dict(os.environ, PYTHONPATH=ROOT)
    beh = json.dumps({"download_s": 0.3, "trial_s": 0.2})
    for off in range(0, n, PER_PROC):
        cnt = min(PER_PROC, n - off)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tools.fleet", "--port", str(port), "--user", B.USER, "--password", B.PASSWORD,
             "--count", str(cnt), "--start", str(off), "--prefix", prefix, "--behaviour", beh],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT))
    for p in procs:
        line = p.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("fleet helper failed: %r" % line)
    return procs


def stop_fleets(procs):
    stats = []
    for p in procs:
        p.stdin.close()
    for p in procs:
        out = p.stdout.read()
        p.wait(60)
        stats.append(json.loads(out.strip().splitlines()[-1]))
    return stats


def run(port, url, n, tmp):
    prefix = "b%dk-" % (n // 1000)
    ids = ["%s%05d" % (prefix, i) for i in range(n)]
    tf = os.path.join(tmp, "targets-%d.txt" % n)
    with open(tf, "w") as f:
        f.write("\n".join(ids) + "\n")
    rel = os.path.join(tmp, "evse-sim-1.1.0.json")
    with open(rel, "w") as f:
        json.dump({"version": "1.1.0", "board": "sim", "image": "evse-sim-1.1.0.img"}, f)
    t0 = time.time()
    fleets = start_fleets(port, prefix, n)
    connect_s = time.time() - t0
    db = os.path.join(tmp, "ro-%d.db" % n)
    cmd = [sys.executable, "-m", "tools.rollout", "--db", db, "start", "--release", rel,
           "--base-url", "http://127.0.0.1:8000/", "--targets", "@" + tf, "--mqtt", url,
           "--canary", "1%", "--waves", "10%,50%,100%", "--success-threshold", "95%",
           "--error-threshold", "5%", "--max-concurrent", "2000", "--progress", "none",
           "--device-timeout", "60", "--report-dir", tmp]
    t1 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                       timeout=600)
    wall = time.time() - t1
    stats = stop_fleets(fleets)
    if p.returncode != 0:
        raise RuntimeError("rollout failed (%d): %s %s" % (p.returncode, p.stdout[-800:], p.stderr[-800:]))
    rep = json.load(open(os.path.join(tmp, "rollout-1.json")))
    cmds = {}
    for s in stats:
        cmds.update(s["update_cmds"])
    once = sum(1 for v in cmds.values() if v == 1)
    if once != n or rep["counts"].get("installed") != n:
        raise RuntimeError("not every device updated exactly once: %d/%d, counts %s"
                           % (once, n, rep["counts"]))
    return {"connect_s": connect_s, "wall_s": wall, "duration_s": rep["duration_s"],
            "rss_kb": rep["controller_peak_rss_kb"], "median_install_s": rep["install_time_s"]["median"]}


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(SIZES) + 2000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need * 2), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        print("skipping: open-file limit too low for %d connections" % max(SIZES))
        return 0
    if B.find_mosquitto() is None:
        print("skipping: mosquitto not installed")
        return 0
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        br = B.Broker(tmp)
        br.start()
        url = "mqtt://%s:%s@127.0.0.1:%d" % (B.BACKEND_USER, B.BACKEND_PASSWORD, br.port)
        try:
            for n in SIZES:
                d = os.path.join(tmp, str(n))
                os.makedirs(d)
                res[n] = r = run(br.port, url, n, d)
                k = "%dk" % (n // 1000)
                report("rollout %s devices: start to all reported" % k, r["wall_s"], "s")
                report("rollout %s devices: rollout duration (report)" % k, r["duration_s"], "s")
                report("rollout %s devices: controller peak RSS" % k, r["rss_kb"] // 1024, "MB", "< 200")
                report("rollout %s devices: median device install" % k, r["median_install_s"], "s")
                report("rollout %s devices: fleet connect" % k, r["connect_s"], "s")
        finally:
            br.stop()
    a, b = res[SIZES[0]], res[SIZES[1]]
    report("rollout 1k->10k: time growth", b["wall_s"] / a["wall_s"], "x", "<= 10 (linear)")
    report("rollout 1k->10k: controller RSS growth", float(b["rss_kb"]) / a["rss_kb"], "x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
