"""ROMFS slots on virtual boards (CPython driver; docs/memory.md "ROMFS slots").

For each lane (mp32 first, then mp64) a board with --romfs at --heap 128K:
the idle live heap after gc WITHOUT the emulated ROM partitions' mapping
(flash on a board) and without the vboard ROM script's own share (C on a
board; reported beside it), offline (no MQTT) and with MQTT connected to a
real mosquitto; then complete updates in a row on the same board (download
from tools.serve, verify, install + ROM image, trial boot from ROM, confirm),
alternating the firmware-only release (~110 KiB: the firmware's .mpy files
compressed; a real release is not smaller than that) and a 1 MiB one (the
same + 900 KiB of incompressible data beside the modules, 4 MiB flash), and
how many of N succeeded. Started through the control channel's `command`
(the same handler as MQTT's cmd/update_firmware)."""
import datetime
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tools import keys, mpunix, release, serve  # noqa: E402
from tools.netutil import free_port  # noqa: E402
from tools.vboard import VBoard, VBoardError  # noqa: E402

HEAP = "128K"
N = int(os.environ.get("EVSE_ROMFS_N", "3"))      # updates of each size per board
LANES = os.environ.get("EVSE_ROMFS_LANES", "mp32,mp64").split(",")    # e.g. mp32
# one complete update, command to confirmed trial (1 MiB on mp32: ~33 s, 22 s
# of it download + verify + install at 1 KiB per 20 ms control period)
TIMEOUT_S = int(os.environ.get("EVSE_ROMFS_TIMEOUT", "120"))
CASES = os.environ.get("EVSE_ROMFS_CASES", "offline,mqtt").split(",")  # e.g. mqtt
_FAILED = ("InstallationFailed", "DownloadFailed", "InvalidSignature", "InstallVerificationFailed")


def report(name, value, unit="", aim=""):
    if isinstance(value, float):
        value = "%.1f" % value
    print("BENCH %s|%s|%s|%s" % (name, value, unit, aim), flush=True)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


def _releases(tmp):
    pem, pub, _ = keys.keygen(os.path.join(tmp, "keys", "rel"))
    out = os.path.join(tmp, "rel")
    blob = {"firmware/blob.bin": random.Random(1).randbytes(900 * 1024)}
    rels = []
    for i in range(2 * N):
        big = i % 2 == 1
        img, _, d = release.build(pem, "0.%d.0" % (i + 2), "sim", out=out,
                                  extra_files=blob if big else None)
        rels.append((os.path.basename(img), big, d["size"]))
    return pub, out, rels


def _idle(b):
    time.sleep(2)
    g = b.control("get", gc=True)
    return (g["mem_alloc"] - g["rom_heap"] - g["rom_script"]) / 1024.0, g["rom_script"] / 1024.0, g


def _settled(b):
    # before the next request: a job resumed after a reset (it re-checks its
    # staged image, then installs) or a trial still running is let finish, so
    # that one fault does not turn the rest of the series into "busy" refusals
    end = time.monotonic() + TIMEOUT_S
    while time.monotonic() < end:
        try:
            g = b.get(timeout=5)
        except VBoardError:
            time.sleep(0.5)
            continue
        if g.get("trial") is False and g.get("firmware") in ((None, "Idle", "Installed") + _FAILED):
            return
        time.sleep(0.5)


def _update(b, port, name, rid):
    _settled(b)
    boots = b.boots
    try:
        r = b.control("command", name="update_firmware", payload={
            "id": "u%d" % rid, "requestId": rid, "retrieveDateTime": _now(),
            "location": "http://127.0.0.1:%d/%s" % (port, name)})
    except VBoardError as e:
        return False, str(e)[:80]
    if not (r.get("reply") or {}).get("ok"):
        return False, "refused: %s" % ((r.get("reply") or {}).get("error"),)
    end = time.monotonic() + TIMEOUT_S
    want = "0.%s.0" % name.split("-0.")[1].split(".")[0]
    while time.monotonic() < end:
        time.sleep(0.5)
        try:
            g = b.get(timeout=5)
        except VBoardError:
            continue
        if b.boots == boots and g.get("firmware") in _FAILED:
            return False, g.get("firmware")
        if b.boots > boots and g.get("version") == want and g.get("trial") is False:
            return True, None
        if b.boots > boots and g.get("version") not in (None, want):
            return False, "rolled back to %s" % g.get("version")
    return False, "timeout"


def _board(tmp, lane, pub, broker):
    return VBoard(os.path.join(tmp, "vb-%s-%s" % (lane, "mqtt" if broker else "off")),
                  id="rb", heap=HEAP, romfs=True, keys=[pub], wdt_ms=3000, flash_blocks=1024,
                  broker=broker, config=dict({"health": {"trial_s": 10}},
                                             **({} if broker else {"mqtt": {"host": ""}})))


def run_lane(tmp, lane, pub, port, rels, broker):
    tag = "%s, %s" % (lane, "MQTT connected" if broker else "offline")
    b = _board(tmp, lane, pub, broker).start()
    try:
        try:
            b.wait_output("agent: rb", 60)
            if broker:
                b.wait_for(lambda: b.get().get("link") == "up", 20)
        except VBoardError as e:
            report("romfs board idles at %s (%s)" % (HEAP, tag), "no: %s" % str(e).split("\n")[0][:60])
            return
        live, script, g = _idle(b)
        report("romfs board idle live heap, agent (%s)" % tag, live, "KB", "<= 64")
        report("romfs board idle, vboard ROM script share (%s)" % tag, script, "KB", "C on a board")
        report("romfs board code from ROM (%s)" % tag, str(g.get("rom")), "", "True")
        ok = {False: 0, True: 0}
        secs = {False: [], True: []}
        why = []
        for i, (name, big, size) in enumerate(rels):
            t0 = time.monotonic()
            good, w = _update(b, port, name, i + 1)
            ok[big] += good
            if good:
                secs[big].append(time.monotonic() - t0)
            if not good:
                why.append("%s: %s" % ("1M" if big else "fw", w))
                sys.stderr.write("  %s update %s failed: %s\n" % (tag, name, w))
        sizes = {big: size for _, big, size in rels}
        report("complete updates at %s, %d KiB image (%s)" % (HEAP, sizes[False] // 1024, tag),
               "%d/%d" % (ok[False], N), "", "all")
        report("complete updates at %s, %d KiB image (%s)" % (HEAP, sizes[True] // 1024, tag),
               "%d/%d" % (ok[True], N), "", "all")
        for big in (False, True):
            if secs[big]:
                report("complete update time at %s, %d KiB image (%s), max of %d" % (
                    HEAP, sizes[big] // 1024, tag, len(secs[big])), max(secs[big]), "s")
        if why:
            report("romfs update failures (%s)" % tag, "; ".join(w[:40] for w in why[:2])[:90])
    finally:
        b.stop()


def main():
    tmp = tempfile.mkdtemp(prefix="romfs-bench-")
    old = os.environ.get("MICROPYTHON")
    mq = None
    try:
        pub, out, rels = _releases(tmp)
        srv, port = serve.serve(out)
        broker = None
        if shutil.which("mosquitto"):
            bport = free_port()
            mq = subprocess.Popen(["mosquitto", "-p", str(bport)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            broker = "127.0.0.1:%d" % bport
            time.sleep(0.5)
        lanes = []
        if mpunix.mp32_binary() and "mp32" in LANES:
            lanes.append(("mp32", mpunix.mp32_binary()))
        if "mp64" in LANES:
            lanes.append(("mp64", None))
        for lane, binary in lanes:
            if binary:
                os.environ["MICROPYTHON"] = binary
            else:
                os.environ.pop("MICROPYTHON", None)
                if old:
                    os.environ["MICROPYTHON"] = old
            if broker is None and "mqtt" in CASES:
                report("romfs board, MQTT connected (%s)" % lane, "skipped: no mosquitto")
            for br in [b for c, b in (("offline", None), ("mqtt", broker))
                       if c in CASES and (c == "offline" or broker)]:
                run_lane(tmp, lane, pub, port, rels, br)
        srv.shutdown()
    finally:
        if mq is not None:
            mq.kill()
            mq.wait()
        if old is None:
            os.environ.pop("MICROPYTHON", None)
        else:
            os.environ["MICROPYTHON"] = old
        if os.environ.get("EVSE_ROMFS_KEEP"):
            sys.stderr.write("romfs bench: boards kept in %s\n" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
