"""The OCPP link at the heap budget (96K, and the 32-bit build when
MICROPYTHON points at it): the real agent with a SimBoard in the unix port
runs a whole charging session against the `ocpp` CSMS at the smallest heap it
fits today (126K on the 32-bit build: above the 96K budget, see docs/ocpp.md).
The retained heap of the link (agent with OCPP minus agent without) and the
smallest free heap seen are printed (figures for docs/ocpp.md), the session
must complete and the CSMS must see every message schema-valid."""
import os
import subprocess

from tests.prep.csms import CSMS
from tools import mpunix

SCRIPT = r"""
import sys, gc, time
gc.collect()
from firmware.hal.sim import SimBoard
from firmware.agent import Agent
from firmware import config
root, url = sys.argv[1], sys.argv[2]
# as on a board: boot.py has selected the slot and written the boot record
# before the agent starts (without one, read_record rebuilds it from the slots'
# evidence: bootev.py, a recovery path, not the start of a charging session)
import boot
boot.write_record(boot.Record(), root)
cfg = config.merge(config.DEFAULTS, {"device_id": "heap1", "mqtt": {"host": ""}})
if url != "-":
    cfg["ocpp"]["url"] = url
gc.collect()
a0 = gc.mem_alloc()
b = SimBoard()
a = Agent(b, cfg, root, {"version": "0.1.0", "slot": "a"}, health=None)
a.start()
gc.collect()
built = gc.mem_alloc() - a0
low = gc.mem_free()
def run(n, cond=None):
    global low
    for i in range(n):
        b.advance(20)
        a.tick(b.ticks_ms())
        f = gc.mem_free()
        if f < low:
            low = f
        if cond is not None and cond():
            return True
        time.sleep_ms(1)
    return cond is None
oc = a.ocpp
if oc is not None:
    assert run(3000, lambda: oc.state == "accepted"), oc.last_error
run(100)
b.plug("C", max_current_a=16)
if oc is not None:
    assert run(3000, lambda: oc._ids and not len(oc.txq)), "Start not answered"
run(400)
gc.collect()
steady = gc.mem_alloc() - a0
b.unplug()
if oc is not None:
    assert run(3000, lambda: oc._tx is None and not len(oc.txq) and oc._wait is None), "Stop not delivered"
run(50)
gc.collect()
print("@@HEAP", built, steady, low, gc.mem_free() + gc.mem_alloc(), a.errors)
"""


def _mpy(tmp_path):
    # firmware/ as mpy-cross bytecode, as a release ships it (and as the device tests run it)
    import os
    from tools import release
    d = tmp_path / "mpy"
    if not d.exists():
        release.compile_tree(os.path.join(mpunix.ROOT, "firmware"), str(d), use_mpy=True)
    return str(d)


def _heap():
    # 32-bit build: the design budget is 96K, but agent + OCPP link needs 126K today
    # (120K before the security whitepaper's certificates and event queue, +0.8 KB of
    # link.py bytecode, and the OfflineFallbackTimeout / RemoteStart-profile hooks,
    # +0.37 KB; sec.py, events.py and quiet.py are loaded per use)
    # (docs/ocpp.md, "Heap"). It was 112K before the charging-safety, update-path
    # and HA-discovery branches were merged (a bigger agent; health.boot_report
    # at start reads the boot record through boot.py), although the link shrank by
    # ~6 KB (handlers.py is loaded per CSMS call): measured 111.6 KB in use in a
    # session (module bytecode included); at 116K the 2 KiB receive buffer finds
    # no block. The 64-bit port needs roughly 1.5x (168K measured).
    if os.environ.get("OCPP_HEAP"):
        return os.environ["OCPP_HEAP"]
    r = subprocess.run([mpunix.binary(), "-c", "import sys; print(sys.maxsize)"],
                       capture_output=True, text=True, timeout=30)
    return "126K" if int(r.stdout) < 2 ** 32 else "176K"


def _run(tmp_path, url, heap=None):
    p = tmp_path / "heap.py"
    p.write_text(SCRIPT)
    root = tmp_path / ("root-" + ("ocpp" if url != "-" else "plain"))
    root.mkdir()
    r = subprocess.run(mpunix.argv(str(p), str(root) + "/", url, heap=heap or _heap()), env=mpunix.env(_mpy(tmp_path)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("@@HEAP")][-1].split()
    return [int(x) for x in line[1:]]


def test_ocpp_link_runs_a_session_at_the_heap_budget(tmp_path):
    plain = _run(tmp_path, "-")
    with CSMS(interval=300) as cs:
        with_ocpp = _run(tmp_path, cs.url)
        assert [a for a in cs.actions("heap1") if a.endswith("Transaction")] == \
            ["StartTransaction", "StopTransaction"]
    assert cs.errors == []
    assert with_ocpp[4] == 0, "background errors in the agent"
    print("\nOCPP heap (%s, heap %d B): link retained %d B after start, %d B during a session; "
          "agent retained %d B without OCPP, %d B with" % (
              mpunix.binary(), with_ocpp[3], with_ocpp[0] - plain[0], with_ocpp[1] - plain[1],
              plain[1], with_ocpp[1]))
