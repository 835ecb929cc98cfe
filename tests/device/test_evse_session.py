# Sessions: start/stop reasons, authorization, energy accounting, the bounded
# record list, pause/resume.
import mptest
from firmware.evse import Evse, Sense
from test_evse_rig import Rig, pwm, MASK

KEYS = ["energy_wh", "id", "reason", "start_ms", "stop_ms", "tag"]


def test_plug_and_charge_session():
    r = Rig()
    r.energy = 1000.0
    r.run(100)
    mptest.eq((r.e.session, r.c.session_active), (None, False))
    r.ev("B")
    r.step()
    r.step()
    t_start = r.t & MASK  # debounced B on the 2nd sample (now_ms is a ticks value)
    mptest.eq(r.c.session_active, True)
    info = r.e.session
    mptest.eq((info["start_ms"], info["tag"], info["energy_wh"], info["paused"]),
              (t_start, None, 0.0, False))
    r.charging()
    r.energy = 1012.5
    r.run(1000)
    mptest.eq(r.e.session["energy_wh"], 12.5)
    mptest.eq(r.e.pop_finished(), None)
    r.ev("A")
    r.step()
    r.step()
    t_stop = r.t & MASK
    rec = r.e.pop_finished()
    mptest.eq(sorted(rec.keys()), KEYS)
    mptest.eq((rec["start_ms"], rec["stop_ms"], rec["reason"], rec["energy_wh"], rec["tag"]),
              (t_start, t_stop, "ev_disconnected", 12.5, None))
    mptest.eq((r.e.session, r.c.session_active, r.e.pop_finished()), (None, False, None))


def test_session_end_reasons():
    # (how the session ends, reason in the record)
    rows = (("unplug", "ev_disconnected"), ("remote", "remote"), ("reason", "user_app"),
            ("weld", "relay_welded"), ("rcd_latch", "rcd_latched"))
    for row in rows:
        how, reason = row
        r = Rig(rcd_max_trips=1)
        r.charging()
        r.run(1000)
        if how == "unplug":
            r.ev("A")
        elif how == "remote":
            mptest.eq(r.e.stop_session(), True)
        elif how == "reason":
            mptest.eq(r.e.stop_session("user_app"), True)
        elif how == "weld":
            r.weld = True
            r.ev("B")
        else:
            r.rcd = True
        r.run(1500)
        rec = r.e.pop_finished()
        mptest.true(rec is not None, "no record", row)
        mptest.eq((rec["reason"], r.c.session_active, r.e.pop_finished()), (reason, False, None),
                  "row", row)


def test_stop_session_blocks_until_unplug_or_authorize():
    r = Rig()
    r.charging()
    r.e.stop_session()
    c = r.step()
    mptest.eq((c.duty, c.session_active), (100.0, False))
    c = r.run(20000)
    mptest.eq((c.relay, c.session_active, pwm(c)), (False, False, False), "restarted by itself")
    mptest.eq(r.e.stop_session(), False, "nothing to stop")
    r.e.authorize("card-7")
    c = r.run(100)
    mptest.eq((c.session_active, r.e.session["tag"]), (True, "card-7"))
    mptest.true(r.until(lambda c: c.relay, 6000) is not None, "no charge after authorize")
    # after stop + unplug + plug: a new session by itself (plug and charge)
    r.e.stop_session()
    r.ev("A")
    r.run(200)
    r.ev("B")
    mptest.eq(r.run(100).session_active, True)
    mptest.eq([r.e.pop_finished()["id"] for _ in range(2)], [1, 2])


def test_stop_session_bad_reason_changes_nothing():
    r = Rig()
    r.charging()
    for bad in ("", None, 5, b"x"):
        mptest.raises(ValueError, r.e.stop_session, bad)
        mptest.eq((r.step().session_active, r.c.relay), (True, True), bad)


def test_require_auth():
    # (authorize when, tag, session expected after plug-in)
    rows = (("never", None, False), ("before", "rfid-1", True), ("after", "rfid-2", True),
            ("before_timeout", "rfid-3", False), ("after_none", None, True))
    for row in rows:
        when, tag, started = row
        r = Rig(require_auth=True, auth_timeout_ms=60000)
        r.run(100)
        if when.startswith("before"):
            r.e.authorize(tag)
            if when == "before_timeout":
                r.run(60100)
            else:
                r.run(30000)
        r.ev("C")
        r.run(1000)
        if when != "before":
            mptest.eq((r.c.relay, pwm(r.c)), (False, False), "charging before auth", row)
        if when.startswith("after"):
            r.e.authorize(tag)
        c = r.run(6000)
        mptest.eq((c.session_active, c.relay), (started, started), "row", row)
        if started:
            mptest.eq(r.e.session["tag"], tag, "row", row)


def test_authorize_during_a_session_sets_a_missing_tag_only():
    r = Rig()
    r.charging()
    r.e.authorize("late")
    mptest.eq(r.e.session["tag"], "late")
    r.e.authorize("other")
    mptest.eq(r.e.session["tag"], "late")


def test_authorize_bad_tag_changes_nothing():
    r = Rig(require_auth=True)
    r.ev("B")
    r.run(200)
    for bad in (5, b"abc", ["x"]):
        mptest.raises(ValueError, r.e.authorize, bad)
        mptest.eq(r.run(200).session_active, False, bad)


def test_energy_accounting():
    # (meter readings during the session, energy in the record)
    rows = (
        ((None, None), None),
        ((100.0, 150.0), 50.0),
        ((100.0, 150.0, 0.0, 20.0), 70.0),  # meter restarted at 0
        ((None, 10.0, 30.0), 20.0),  # meter appears after the start
        ((5, 7), 2),
    )
    for row in rows:
        readings, energy = row
        r = Rig()
        r.energy = readings[0]
        r.ev("B")
        r.run(100)
        for e in readings[1:]:
            r.energy = e
            r.run(100)
        r.ev("A")
        r.run(100)
        rec = r.e.pop_finished()
        if energy is None:
            mptest.eq(rec["energy_wh"], None, "row", row)
        else:
            mptest.near(rec["energy_wh"], energy, 1e-9, "row", row)


def test_finished_records_are_bounded():
    r = Rig(session_log=3)
    for i in range(5):
        r.ev("B")
        r.run(100)
        r.ev("A")
        r.run(100)
    mptest.eq(r.e.sessions_dropped, 2)
    mptest.eq([r.e.pop_finished()["id"] for _ in range(3)], [3, 4, 5])
    mptest.eq(r.e.pop_finished(), None)


def test_pause_and_resume():
    r = Rig()
    r.charging()
    r.run(6000)
    r.e.pause()
    mptest.eq((r.e.paused, r.e.session["paused"]), (True, True))
    c = r.step()
    mptest.eq((c.duty, c.current_a, c.session_active), (100.0, 0, True))
    r.ev("B")  # the vehicle stops
    c = r.run(100)
    mptest.eq(c.relay, False)
    c = r.run(20000)
    mptest.eq((pwm(c), c.session_active), (False, True), "PWM while paused")
    r.e.resume()
    c = r.step()
    mptest.true(pwm(c), "resume: PWM", c.duty)
    r.ev("C")
    mptest.true(r.until(lambda c: c.relay, 3000) is not None, "no charge after resume")
    # pause survives an unplug (a charger setting, not a session one)
    r.e.pause()
    r.ev("A")
    r.run(200)
    r.ev("B")
    c = r.run(6000)
    mptest.eq((c.session_active, pwm(c)), (True, False))


def test_no_session_with_a_latched_fault():
    r = Rig(rcd_max_trips=1)
    r.rcd = True
    r.run(100)
    r.rcd = False
    r.ev("B")
    c = r.run(5000)
    mptest.eq((c.fault, c.session_active), ("rcd_latched", False))
    r.e.clear_faults()
    mptest.eq(r.run(200).session_active, True)


def test_session_start_uses_caller_time():
    e = Evse(32, selftest=False)
    s = Sense(cp_high_mv=9000, cp_low_mv=-12000)
    base = 3 * 10**12 + 7
    for i in range(3):
        e.step(base + 20 * i, s)
    mptest.eq(e.session["start_ms"], base + 20)
