# mptest: heapsize=128K prep=tests.prep.bundles:make
# Heap: boot.py stays source on a board (it is the bootstrap), and compiling it
# peaks above 96K on the 64-bit unix port.
# Boot record (boot.py): encoding, torn copies, CRC, seq wrap, transitions,
# select() for every record situation, main() with fake slot packages.
import os
import sys
import mptest
import boot
import bootev
from firmware.ota import slots, evidence
from firmware.hal import simflash

R = None


def setup():
    global R
    R = simflash.tmpdir("evboot") + "/"


def teardown():
    boot._purge(R + "slots/a")
    boot._purge(R + "slots/b")
    simflash.rmtree(R[:-1])


def _inst(slot, name):
    p = mptest.data_path(name + ".evb")
    # install() refuses the active slot: point the record away while preparing
    rec = boot.read_record(R)
    if rec.active == slot and boot.verify_slot(slot, R):
        rec.active = boot.other(slot)
        rec.pending = None
        boot.write_record(rec, R)
    return slots.install(slot, p, 0, os.stat(p)[6], R)


def _rec(**kw):
    r = boot.Record(kw.pop("active", "a"))
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def _raw(i):
    try:
        with open(R + "bootrec." + str(i), "rb") as f:
            return f.read()
    except OSError:
        return None


def _break_slot(slot):
    with open(R + "slots/" + slot + "/firmware/agent.py", "ab") as f:
        f.write(b"# tampered\n")


def _runlog():
    try:
        with open(R + "runlog") as f:
            return [l.split() for l in f.read().split("\n") if l]
    except OSError:
        return []


# ---- record encoding ----------------------------------------------------------

def test_crc32_known_value_and_fallback():
    mptest.eq(boot.crc32(b"123456789"), 0xCBF43926)
    saved = boot._crc32
    boot._crc32 = None
    try:
        mptest.eq(boot.crc32(b"123456789"), 0xCBF43926)
        mptest.eq(boot.crc32(b"abc", boot.crc32(b"12")), saved(b"12abc") & 0xFFFFFFFF)
    finally:
        boot._crc32 = saved


def test_record_roundtrip():
    r = _rec(active="b", pending="a", trials=2, confirmed=False, floor=7, pending_sec=9,
             pending_version="2.0.0", reason="crashed", failed_version="1.5", boots=41)
    boot.write_record(r, R)
    got = boot.read_record(R)
    want = r.as_dict()
    mptest.eq(got.as_dict(), want)
    mptest.eq((got["active"], got.seq), ("b", 1))
    mptest.eq(boot.decode(boot.encode(r)).as_dict(), want)


def test_writes_alternate_between_copies():
    for i in range(1, 6):
        boot.write_record(_rec(boots=i), R)
        mptest.eq(boot.read_record(R).seq, i)
        mptest.eq(boot.decode(_raw((i - 1) % 2)).seq, i)
    mptest.eq((boot.decode(_raw(0)).seq, boot.decode(_raw(1)).seq), (5, 4))


def test_every_byte_flip_and_truncation_is_detected():
    data = boot.encode(_rec(reason="manifest_mismatch", floor=3))
    mptest.true(boot.decode(data) is not None)
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            b = bytearray(data)
            b[i] ^= bit
            mptest.eq(boot.decode(bytes(b)), None, "flip at", i)
    for n in range(len(data)):
        mptest.eq(boot.decode(data[:n]), None, "truncated to", n)
    mptest.eq(boot.decode(data + b"\0"), None)


def test_torn_newest_copy_falls_back_to_the_other():
    boot.write_record(_rec(boots=1, floor=1), R)   # copy 0, seq 1
    boot.write_record(_rec(boots=2, floor=2), R)   # copy 1, seq 2
    good = _raw(1)
    for torn in (good[:len(good) // 2], b"", good[:-1] + bytes([good[-1] ^ 0xFF]), b"\xff" * len(good)):
        with open(R + "bootrec.1", "wb") as f:
            f.write(torn)
        rec = boot.read_record(R)
        mptest.eq((rec.seq, rec.floor), (1, 1))
    boot.write_record(_rec(boots=3, floor=3), R)   # goes into the torn copy 1
    mptest.eq(boot.decode(_raw(1)).seq, 2)
    mptest.eq(boot.decode(_raw(0)).seq, 1)


def test_crc_valid_but_invalid_fields_are_rejected():
    for kw in ({"active": "c"}, {"pending": "a"}, {"trials": -1}, {"trials": 256},
               {"floor": -5}, {"confirmed": 1}, {"reason": "x" * 65}, {"boots": None},
               {"pending_sec": "7"}):
        r = _rec()
        for k, v in kw.items():
            setattr(r, k, v)
        mptest.eq(boot.decode(boot.encode(r)), None, kw)


def test_sequence_wraps_around():
    mptest.true(boot.newer(0, 0xFFFFFFFF) and not boot.newer(0xFFFFFFFF, 0))
    mptest.true(boot.newer(5, 3) and not boot.newer(3, 5) and not boot.newer(4, 4))
    boot._write_copy(R, 0, _rec(seq=0xFFFFFFFE, floor=1))
    boot._write_copy(R, 1, _rec(seq=0xFFFFFFFF, floor=2))
    mptest.eq(boot.read_record(R).floor, 2)
    boot.write_record(_rec(floor=3), R)
    mptest.eq((boot.read_record(R).seq, boot.read_record(R).floor), (0, 3))
    mptest.eq(boot.decode(_raw(0)).seq, 0)
    boot.write_record(_rec(floor=4), R)
    mptest.eq((boot.read_record(R).seq, boot.read_record(R).floor), (1, 4))


def test_default_record_on_a_blank_filesystem():
    mptest.eq(boot.read_record(R).active, "a")           # nothing installed
    _inst("b", "v1")
    mptest.eq(boot.read_record(R).active, "b")           # only b verifies
    _inst("a", "v2")
    mptest.eq(boot.read_record(R).active, "a")           # both: the newer version
    mptest.eq(_raw(0), None)                             # a default is not written


# ---- transitions ---------------------------------------------------------------

def test_set_pending_confirm_raises_floor_only_at_confirm():
    _inst("a", "v1")
    _inst("b", "v2")
    boot.write_record(_rec(floor=4), R)
    boot.set_pending("b", sec_counter=9, root=R)
    rec = boot.read_record(R)
    mptest.eq((rec.pending, rec.trials, rec.confirmed, rec.floor, rec.pending_sec, rec.pending_version),
              ("b", 3, False, 4, 9, "2.0.0"))
    mptest.eq(boot.confirm(R), True)
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.pending, rec.confirmed, rec.floor, rec.pending_sec), ("b", None, True, 9, None))
    mptest.eq(boot.confirm(R), False)                     # nothing pending: no change
    boot.set_pending("a", sec_counter=2, trials=1, version="1.0.0", root=R)
    boot.confirm(R)
    mptest.eq(boot.read_record(R).floor, 9)               # never lowered


def test_rollback_keeps_active_and_floor():
    boot.write_record(_rec(floor=4), R)
    boot.set_pending("b", sec_counter=9, version="2.0.0", root=R)
    mptest.eq(boot.rollback("health_failed", R), True)
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.pending, rec.floor, rec.reason, rec.failed_version, rec.trials),
              ("a", None, 4, "health_failed", "2.0.0", 0))
    mptest.eq(boot.rollback("again", R), False)
    mptest.eq(boot.clear_reason(R), True)
    mptest.eq((boot.read_record(R).reason, boot.read_record(R).failed_version), (None, None))


def test_bad_transition_arguments_change_nothing():
    boot.write_record(_rec(), R)
    before = (_raw(0), _raw(1))
    for kw in ({"slot": "a"}, {"slot": "c"}, {"slot": "b", "trials": 0}, {"slot": "b", "trials": 300},
               {"slot": "b", "sec_counter": -1}, {"slot": "b", "version": 5}):
        mptest.raises(ValueError, lambda: boot.set_pending(root=R, **kw))
    mptest.eq((_raw(0), _raw(1)), before)


# ---- select() ---------------------------------------------------------------------
# situation: (slots installed, broken slots, record or None) -> (slot, trial,
# reason, record fields after)
_SELECT = [
    ("blank fs, a installed", "a", "", None, ("a", False, None), {"active": "a", "pending": None}),
    ("confirmed a", "ab", "", {}, ("a", False, None), {"active": "a"}),
    ("pending b, 3 trials", "ab", "", {"pending": "b", "trials": 3, "confirmed": False, "pending_version": "2.0.0"},
     ("b", True, None), {"pending": "b", "trials": 2}),
    ("pending b, last trial", "ab", "", {"pending": "b", "trials": 1, "confirmed": False},
     ("b", True, None), {"pending": "b", "trials": 0}),
    ("pending b, trials exhausted", "ab", "", {"pending": "b", "trials": 0, "pending_version": "2.0.0", "pending_sec": 8},
     ("a", False, "trials_exhausted"), {"active": "a", "pending": None, "failed_version": "2.0.0", "floor": 0}),
    ("pending b broken", "ab", "b", {"pending": "b", "trials": 3, "pending_version": "2.0.0"},
     ("a", False, "manifest_mismatch"), {"active": "a", "pending": None, "failed_version": "2.0.0"}),
    ("pending b not installed", "a", "", {"pending": "b", "trials": 3},
     ("a", False, "manifest_mismatch"), {"pending": None}),
    ("active a broken, b fine", "ab", "a", {}, ("b", False, "manifest_mismatch"),
     {"active": "b", "failed_version": "1.0.0"}),
    ("active a missing, b fine", "b", "", {}, ("b", False, "manifest_mismatch"), {"active": "b"}),
    ("active a broken, pending b", "ab", "a", {"pending": "b", "trials": 2},
     ("b", True, None), {"active": "a", "pending": "b", "trials": 1}),
    ("exhausted b, active a broken", "ab", "a", {"pending": "b", "trials": 0},
     ("b", False, "manifest_mismatch"), {"active": "b", "pending": None}),
    ("both broken", "ab", "ab", {"pending": "b", "trials": 2}, (None, False, "manifest_mismatch"), {"pending": None}),
    ("nothing installed", "", "", None, (None, False, None), {"active": "a"}),
    ("active b confirmed", "ab", "", {"active": "b"}, ("b", False, None), {"active": "b"}),
]


def test_select_table():
    for name, inst, broken, rec, want, after in _SELECT:
        if "slots" in os.listdir(R[:-1]):
            simflash.rmtree(R + "slots")
        for f in ("bootrec.0", "bootrec.1"):
            if f in os.listdir(R[:-1]):
                os.remove(R + f)
        for s in inst:
            _inst(s, "v1" if s == "a" else "v2")
        for f in ("bootrec.0", "bootrec.1"):
            if f in os.listdir(R[:-1]):
                os.remove(R + f)
        for s in broken:
            _break_slot(s)
        if rec is not None:
            boot.write_record(_rec(**rec), R)
        boots = boot.read_record(R).boots
        slot, info = boot.select(R)
        mptest.eq((slot, info["trial"], info["reason"]), want, name)
        mptest.eq(info["slot"], slot, name)
        got = boot.read_record(R)
        for k, v in after.items():
            mptest.eq(getattr(got, k), v, name, k)
        mptest.eq(got.boots, boots + 1, name, "boots")
        if slot is not None:
            mptest.true(boot.verify_slot(slot, R), name)
            mptest.eq(info["version"], "1.0.0" if slot == "a" else "2.0.0", name)
        if got.pending is None:
            mptest.eq(got.trials, 0, name)


def test_pending_slot_gets_exactly_its_trials():
    _inst("a", "v1")
    _inst("b", "v2")
    boot.write_record(_rec(floor=1), R)
    boot.set_pending("b", sec_counter=5, trials=3, root=R)
    got = [boot.select(R)[0] for _ in range(5)]
    mptest.eq(got, ["b", "b", "b", "a", "a"])
    rec = boot.read_record(R)
    mptest.eq((rec.reason, rec.failed_version, rec.floor, rec.pending), ("trials_exhausted", "2.0.0", 1, None))


def test_unwritable_record_never_runs_an_uncounted_trial():
    _inst("a", "v1")
    _inst("b", "v2")
    boot.write_record(_rec(), R)                     # copy 0
    boot.set_pending("b", root=R)                     # copy 1 (newest)
    os.remove(R + "bootrec.0")
    os.mkdir(R + "bootrec.0")                         # the next write fails
    slot, info = boot.select(R)
    mptest.eq((slot, info["trial"]), ("a", False))
    mptest.eq(boot.read_record(R).trials, 3)
    os.rmdir(R + "bootrec.0")


# ---- main() with fake slot packages -------------------------------------------------

def test_main_runs_the_chosen_slot():
    _inst("a", "v1")
    boot.write_record(_rec(), R)
    info = boot.main(R)
    mptest.eq(_runlog(), [["1.0.0", "a", "False", "None"]])
    mptest.eq((info["slot"], info["version"], info["root"]), ("a", "1.0.0", R))
    mptest.eq(sys.path[0], R + "slots/a")
    mptest.true(sys.modules["firmware.agent"].VERSION == "1.0.0")


def test_main_trial_run_then_confirm():
    _inst("a", "v1")
    _inst("b", "v2")
    boot.write_record(_rec(), R)
    boot.set_pending("b", sec_counter=3, root=R)
    info = boot.main(R)
    mptest.eq((info["slot"], info["trial"], info["trials"]), ("b", True, 2))
    mptest.eq(_runlog(), [["2.0.0", "b", "True", "None"]])
    boot.confirm(R)
    boot._purge(R + "slots/b")
    info = boot.main(R)
    mptest.eq((info["slot"], info["trial"], boot.read_record(R).floor), ("b", False, 3))


def test_main_import_failure_of_pending_rolls_back():
    _inst("a", "v1")
    _inst("b", "noimport")
    boot.write_record(_rec(), R)
    boot.set_pending("b", root=R)
    info = boot.main(R)
    mptest.eq(_runlog(), [["1.0.0", "a", "False", "import_failed"]])
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.pending, rec.reason, rec.failed_version), ("a", None, "import_failed", "2.2.0"))
    mptest.eq((info["reason"], info["failed_version"]), ("import_failed", "2.2.0"))
    mptest.true(R + "slots/b" not in sys.path)


def test_main_crashing_pending_uses_its_trials_then_rolls_back():
    _inst("a", "v1")
    _inst("b", "crash")
    boot.write_record(_rec(), R)
    boot.set_pending("b", root=R)
    info = boot.main(R)
    log = _runlog()
    mptest.eq([l[:3] for l in log], [["2.1.0", "b", "True"]] * 3 + [["1.0.0", "a", "False"]])
    mptest.eq(log[-1][3], "trials_exhausted")
    mptest.eq((info["slot"], boot.read_record(R).failed_version), ("a", "2.1.0"))


def test_main_active_import_failure_switches_to_the_other_slot():
    _inst("b", "v2")
    _inst("a", "noimport")
    boot.write_record(_rec(active="a"), R)
    boot.main(R)
    mptest.eq(_runlog(), [["2.0.0", "b", "False", "import_failed"]])
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.reason, rec.failed_version), ("b", "import_failed", "2.2.0"))


def test_main_crash_loop_of_the_only_slot_ends_in_safe_state():
    _inst("a", "crash")
    boot.write_record(_rec(), R)
    info = boot.main(R)
    mptest.eq(len(_runlog()), 3)
    mptest.eq((info["slot"], boot.read_record(R).reason), (None, "crashed"))


def test_main_without_firmware():
    info = boot.main(R)
    mptest.eq(info["slot"], None)
    mptest.eq(_runlog(), [])
    mptest.true("firmware.hal" not in sys.modules or True)
    boot.idle(info, forever=False)


def test_main_run_false_imports_without_running():
    _inst("a", "v1")
    info = boot.main(R, run=False)
    mptest.eq((info["slot"], _runlog()), ("a", []))
    mptest.eq(sys.modules["firmware.agent"].VERSION, "1.0.0")


# ---- the anti-rollback floor at boot, transient import failures (issue 13.3, issue 9) ----

def _sig(slot, version, sec, confirmed=True):
    # the updater's evidence for a slot installed from a signed image (fake digest)
    evidence.write_evidence(slot, version, sec, ("%s%s" % (slot, version) * 16)[:64], R)
    if confirmed:
        mptest.true(evidence.mark_confirmed(slot, R))


def _two(sec_a=1, sec_b=2, conf_b=True):
    _inst("a", "v1")
    _inst("b", "v2")
    _sig("a", "1.0.0", sec_a)
    _sig("b", "2.0.0", sec_b, conf_b)


def test_fallback_below_the_floor_is_a_reported_last_resort_keeping_the_floor():
    _two(sec_a=1, sec_b=2)
    boot.write_record(_rec(active="b", floor=2, top="2.0.0"), R)
    _break_slot("b")
    slot, info = boot.select(R)
    rec = boot.read_record(R)
    mptest.eq((slot, info["last_resort"], info["reason"]), ("a", True, "last_resort: below_floor"))
    mptest.eq((rec.floor, rec.top, rec.failed_version), (2, "2.0.0", "2.0.0"))


def test_fallback_at_or_above_the_floor_is_a_plain_fallback():
    _two(sec_a=2, sec_b=2)
    boot.write_record(_rec(active="b", floor=2), R)
    _break_slot("b")
    slot, info = boot.select(R)
    mptest.eq((slot, info["last_resort"], info["reason"]), ("a", False, "manifest_mismatch"))


def test_import_failure_never_falls_back_below_the_floor():
    _two(sec_a=1, sec_b=2)
    boot.write_record(_rec(active="b", floor=2), R)
    boot._purge(R + "slots/b")
    # b imports nothing, every time (not transient): it is recorded, but the
    # active slot is not switched to a slot below the floor
    with open(R + "slots/b/firmware/agent.py", "w") as f:
        f.write("import no_such_module_xyz\n")
    slots.seal("b", "2.0.0", R)
    _sig("b", "2.0.0", 2)
    info = boot.main(R)
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.reason, rec.floor), ("b", "import_failed", 2))
    mptest.eq((info["slot"], _runlog()), (None, []))


_MEM_ONCE = '''import sys
_p = sys.path[0] + ".mem"
try:
    open(_p).close()
except OSError:
    open(_p, "w").close()
    raise MemoryError("transient heap shortage")
'''


def _mem_agent(slot, version, always=False):
    p = R + "slots/" + slot + "/firmware/agent.py"
    with open(p) as f:
        body = f.read()
    with open(p, "w") as f:
        f.write('raise MemoryError("no heap")\n' if always else _MEM_ONCE)
        f.write(body)
    slots.seal(slot, version, R)


def test_transient_memoryerror_at_import_is_retried_and_persists_nothing():
    _inst("a", "v1")
    _inst("b", "v2")
    _mem_agent("b", "2.0.0")
    boot.write_record(_rec(active="b"), R)
    info = boot.main(R)
    rec = boot.read_record(R)
    mptest.eq(_runlog(), [["2.0.0", "b", "False", "None"]])
    mptest.eq((info["slot"], rec.active, rec.reason, rec.failed_version), ("b", "b", None, None))


def test_persistent_memoryerror_never_marks_the_good_slot_failed():
    _inst("a", "v1")
    _inst("b", "v2")
    _mem_agent("b", "2.0.0", always=True)
    boot.write_record(_rec(active="b"), R)
    info = boot.main(R)
    rec = boot.read_record(R)
    mptest.eq((info["slot"], info.get("transient"), info["reason"]), (None, True, "memory"))
    mptest.eq((rec.active, rec.reason, rec.failed_version), ("b", None, None))
    boot.idle(info, forever=False)                 # returns: main.py starts over


def test_confirm_records_the_highest_confirmed_version_and_only_the_running_slot():
    _inst("a", "v1")
    _inst("b", "v2")
    _sig("b", "2.0.0", 4, confirmed=False)
    boot.write_record(_rec(), R)
    boot.set_pending("b", sec_counter=4, version="2.0.0", root=R)
    before = (_raw(0), _raw(1))
    mptest.eq(boot.confirm(R, slot="a"), False)            # a slot that did not run the trial
    mptest.eq(boot.confirm(R, slot="b", version="1.5.0"), False)
    mptest.eq((_raw(0), _raw(1)), before)
    mptest.eq(bootev.is_confirmed("b", R), False)
    mptest.eq(boot.confirm(R, slot="b", version="2.0.0"), True)
    mptest.true(evidence.mark_confirmed("b", R))
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.floor, rec.top), ("b", 4, "2.0.0"))
    mptest.eq(bootev.is_confirmed("b", R), True)


# ---- both record copies lost, MANIFEST edits (issue 10 section 2) ----------------

def _lose_record():
    for f in ("bootrec.0", "bootrec.1"):
        try:
            os.remove(R + f)
        except OSError:
            pass


def test_lost_record_prefers_a_confirmed_slot_over_a_newer_never_confirmed_one():
    # a (1.0.0, counter 3) confirmed; b (2.0.0, counter 4) installed, never passed a trial
    _two(sec_a=3, sec_b=4, conf_b=False)
    _lose_record()
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.pending, rec.confirmed, rec.floor, rec.top), ("a", None, True, 3, "1.0.0"))
    slot, info = boot.select(R)
    mptest.eq((slot, info["trial"], info["version"]), ("a", False, "1.0.0"))


def test_lost_record_picks_the_highest_confirmed_signed_slot_and_keeps_its_floor():
    _two(sec_a=3, sec_b=5)
    _lose_record()
    rec = boot.read_record(R)
    mptest.eq((rec.active, rec.pending, rec.floor, rec.top), ("b", None, 5, "2.0.0"))


def test_lost_record_and_only_unconfirmed_slots_boot_on_trial():
    _inst("b", "v2")
    _sig("b", "2.0.0", 2, confirmed=False)
    _lose_record()
    slot, info = boot.select(R)
    mptest.eq((slot, info["trial"]), ("b", True))


def test_running_version_comes_from_signed_evidence_not_the_manifest():
    _two(sec_a=1, sec_b=2)
    boot.write_record(_rec(active="b"), R)
    mptest.eq(boot.select(R)[1]["version"], "2.0.0")
    # edit the MANIFEST's version (files still match): the evidence no longer binds
    p = R + "slots/b/MANIFEST"
    with open(p) as f:
        m = f.read()
    with open(p, "w") as f:
        f.write(m.replace('"2.0.0"', '"9.9.9"'))
    mptest.true(boot.verify_slot("b", R))
    slot, info = boot.select(R)
    mptest.eq((slot, info["version"]), ("b", None))       # unknown, never the edited one
    mptest.eq(bootev.slot_version("b", R), (None, False))
    mptest.eq(bootev.slot_version("a", R), ("1.0.0", True))


def test_evidence_copies_are_crc_checked_and_dropped_before_a_wipe():
    _two()
    p = R + "slots/b.sig"
    with open(p, "rb") as f:
        good = f.read()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x10
        with open(p, "wb") as f:
            f.write(bad)
        mptest.eq(bootev.slot_evidence("b", R), None, i)
    with open(p, "wb") as f:
        f.write(good)
    mptest.true(bootev.slot_evidence("b", R) is not None)
    slots.wipe("b", R)
    mptest.eq(sorted(n for n in os.listdir(R + "slots") if n.startswith("b.")), [])
