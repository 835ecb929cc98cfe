# mptest: heapsize=240K timeout=300
# Heap: the whole agent with the OCPP link, plus smart.py, handlers.py and
# firmware/config.py kept loaded by the test, and a new agent per test.
# Smallest passing cap measured: 224K on the 64-bit port, 176K on mp32.
# OCPP smart charging when the CSMS goes quiet, in virtual time: the real agent
# on a SimBoard, its OCPP link pointed at a port where nothing listens (the
# real socket code: connection refused, backoff). The profiles stay in force
# offline (OCPP 1.6 3.13 "offline behavior"); with OfflineFallbackTimeout the
# charging core's TTL caps the offer at fallback_current_a once nothing came
# from the CSMS for that long: it lowers the offer, never raises it (not above
# the rating, not above a lower profile), an expired profile does not bring the
# rating back while quiet, and a reboot keeps the cap until the CSMS is heard.
# And RemoteStartTransaction's chargingProfile: a TxProfile for the transaction
# that remote start creates (same idTag, within ConnectionTimeOut), refused
# when it is another purpose or names a transactionId, nothing changed then.
import json
import time
import mptest
from firmware.hal import simflash
from firmware.hal.sim import SimBoard
from firmware.agent import Agent
from firmware import config
from firmware.ocpp import link as oclink

STEP = 100       # virtual ms per control period here
T0 = 1767225600  # the board's wall clock at virtual 0 (2026-01-01T00:00:00Z)
_dir = None


def setup():
    global _dir
    _dir = simflash.tmpdir("evse-oquiet")


def teardown():
    simflash.rmtree(_dir)


def _agent(b, fresh=True, **kw):
    import os
    import gc
    gc.collect()
    if fresh:
        simflash.rmtree(_dir)
        os.mkdir(_dir)
    c = {"device_id": "q1", "mqtt": {"host": ""}, "max_current_a": 16, "fallback_current_a": 6}
    c.update(kw)
    cfg = config.merge(config.DEFAULTS, c)
    cfg["ocpp"]["url"] = "ws://127.0.0.1:1/ocpp"     # nothing listens there
    a = Agent(b, cfg, _dir + "/", {"version": "0.1.0", "slot": "a"}, health=None)
    a.ocpp._wall = lambda: T0 + b.ticks_ms() // 1000   # the board's clock, in virtual time
    a.start()
    return a


def _run(a, b, secs):
    for _ in range(int(secs * 1000) // STEP):
        b.advance(STEP)
        a.tick(b.ticks_ms())


def _offer(a):
    c = a.cmd
    return (c.current_a if c.duty < 100 else 0, c.source)


def _iso(t):
    return oclink.iso(time.gmtime(t))


def _profile(a, pid, amps, level=0, valid_to=None, purpose="TxDefaultProfile", cid=1):
    lk = a.ocpp
    cp = {"chargingProfileId": pid, "stackLevel": level, "chargingProfilePurpose": purpose,
          "chargingProfileKind": "Absolute",
          "chargingSchedule": {"chargingRateUnit": "A", "startSchedule": _iso(int(lk._now_s()) - 60),
                               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": amps}]}}
    if valid_to is not None:
        cp["validTo"] = _iso(valid_to)
    from firmware.ocpp import handlers
    r = handlers.SetChargingProfile(lk, {"connectorId": cid, "csChargingProfiles": cp})
    mptest.eq(r, {"status": "Accepted"})


def _configure(a, key, value):
    from firmware.ocpp import handlers
    mptest.eq(handlers.ChangeConfiguration(a.ocpp, {"key": key, "value": value}), {"status": "Accepted"})
    _heard(a)


def _heard(a):
    # what the link does with any message from the CSMS (here an answer to a
    # CALL it gave up on), through its receive path
    a.ocpp._incoming(a._now, '[3,"late-answer",{}]')


def _state(a):
    with open(_dir + "/ocpp/state.json") as f:
        return json.load(f)


def test_profiles_stay_in_force_offline_by_default():
    b = SimBoard()
    a = _agent(b)
    mptest.eq(a.ocpp.conf["OfflineFallbackTimeout"], 0)
    _run(a, b, 3)
    b.plug("C")
    _profile(a, 1, 10)
    _run(a, b, 10)
    mptest.eq(_offer(a), (10, "ocpp"))
    _run(a, b, 900)                     # 15 min without a CSMS
    mptest.true(a.ocpp.state in ("offline", "connecting"), a.ocpp.state)
    mptest.true(a.ocpp.attempts >= 5, a.ocpp.attempts)
    mptest.eq(_offer(a), (10, "ocpp"))
    mptest.eq(a.errors, 0)


def test_quiet_csms_caps_the_offer_at_the_fallback_and_lifts_it_when_heard():
    b = SimBoard()
    a = _agent(b)
    _run(a, b, 3)
    b.plug("C")
    _profile(a, 1, 10)
    _configure(a, "OfflineFallbackTimeout", "60")
    _run(a, b, 10)
    mptest.eq(_offer(a), (10, "ocpp"))
    _run(a, b, 45)                      # 55 s quiet: not yet
    mptest.eq(_offer(a), (10, "ocpp"))
    mptest.eq(a.ocpp.quiet, False)
    _run(a, b, 10)                      # 65 s quiet
    mptest.eq(_offer(a), (6, "fallback"))
    mptest.eq(a.ocpp.quiet, True)
    mptest.eq(_state(a).get("quiet"), True)
    mptest.true(a.cmd.relay, "still charging, at the fallback")
    _heard(a)                           # the CSMS is back
    _run(a, b, 6)                       # the pilot changes at most every 5 s
    mptest.eq(_offer(a), (10, "ocpp"))
    mptest.eq(a.ocpp.quiet, False)
    mptest.eq(_state(a).get("quiet"), None)
    # a profile below the fallback: going quiet keeps it (lowers, never raises)
    _profile(a, 2, 3, level=1)
    _run(a, b, 6)
    mptest.eq(_offer(a)[0], 0)          # below 6 A: no PWM
    _run(a, b, 70)
    mptest.eq(a.ocpp.quiet, True)
    mptest.eq(_offer(a)[0], 0)
    mptest.eq(a.errors, 0)


def test_a_profile_expiring_while_quiet_does_not_bring_the_rating_back():
    b = SimBoard()
    a = _agent(b)
    _run(a, b, 3)
    b.plug("C")
    _configure(a, "OfflineFallbackTimeout", "60")
    _profile(a, 1, 10, valid_to=int(a.ocpp._now_s()) + 120)
    _run(a, b, 10)
    mptest.eq(_offer(a), (10, "ocpp"))
    _run(a, b, 60)
    mptest.eq(_offer(a), (6, "fallback"))
    _run(a, b, 60)                      # validTo passed: the profile no longer applies
    mptest.eq(a.ocpp.smart.limit_a, None)
    mptest.eq(_offer(a), (6, "fallback"))
    _heard(a)                           # with the CSMS there, the rating again (it may send a new profile)
    _run(a, b, 6)
    mptest.eq(_offer(a), (16, "max"))
    mptest.eq(a.errors, 0)


def test_the_fallback_is_never_above_the_rating():
    b = SimBoard()
    a = _agent(b, max_current_a=10, fallback_current_a=20)
    _run(a, b, 3)
    b.plug("C")
    _configure(a, "OfflineFallbackTimeout", "30")
    _run(a, b, 40)
    mptest.eq(a.ocpp.quiet, True)
    mptest.eq(_offer(a), (10, "max"))
    mptest.eq(a.errors, 0)


def test_a_reboot_while_quiet_keeps_the_fallback_until_the_csms_is_heard():
    b = SimBoard()
    a = _agent(b)
    _run(a, b, 3)
    _configure(a, "OfflineFallbackTimeout", "60")
    _run(a, b, 70)
    mptest.eq(a.ocpp.quiet, True)
    a = None
    b2 = SimBoard(now_ms=b.ticks_ms())  # power cycle: same flash, a new board and agent
    a = _agent(b2, fresh=False)
    mptest.eq(a.ocpp.quiet, True)
    _run(a, b2, 3)
    b2.plug("C")
    _run(a, b2, 3)
    mptest.eq(_offer(a), (6, "fallback"))   # at once, not 60 s after the boot
    _heard(a)
    _run(a, b2, 6)
    mptest.eq(_offer(a), (16, "max"))
    # switched off again: the link's limit source is gone
    _configure(a, "OfflineFallbackTimeout", "0")
    _run(a, b2, 120)
    mptest.eq(_offer(a), (16, "max"))
    mptest.eq(a.ocpp.quiet, False)
    mptest.eq(a.errors, 0)


def _remote(a, tag, prof):
    from firmware.ocpp import handlers
    p = {"connectorId": 1, "idTag": tag}
    if prof is not None:
        p["chargingProfile"] = prof
    return handlers.RemoteStartTransaction(a.ocpp, p)


def _txp(pid, amps, purpose="TxProfile", **kw):
    p = {"chargingProfileId": pid, "stackLevel": 0, "chargingProfilePurpose": purpose,
         "chargingProfileKind": "Relative",
         "chargingSchedule": {"chargingRateUnit": "A",
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": amps}]}}
    p.update(kw)
    return p


def _session_tag(a):
    s = a.evse.session
    return None if s is None else s["tag"]


def test_remote_start_profile_refused_changes_nothing():
    from firmware.ocpp import rpc
    b = SimBoard()
    a = _agent(b)
    _run(a, b, 3)
    mptest.eq(_remote(a, "RS0", _txp(5, 8, purpose="TxDefaultProfile")), {"status": "Rejected"})
    mptest.eq(_remote(a, "RS0", _txp(5, 8, transactionId=3)), {"status": "Rejected"})
    bad = _txp(5, 8)
    bad["chargingSchedule"]["chargingSchedulePeriod"][0]["startPeriod"] = 2
    e = mptest.raises(rpc.CallError, _remote, a, "RS0", bad)
    mptest.eq(e.code, rpc.PROPERTY)
    bad = _txp(5, 8)
    del bad["chargingSchedule"]
    e = mptest.raises(rpc.CallError, _remote, a, "RS0", bad)
    mptest.eq(e.code, rpc.OCCURENCE)
    mptest.eq(a.ocpp.smart.pending, None)
    for i in range(8):                      # MaxChargingProfilesInstalled reached
        _profile(a, 40 + i, 20, level=i)
    mptest.eq(_remote(a, "RS0", _txp(5, 8)), {"status": "Rejected"})
    from firmware.ocpp import handlers
    mptest.eq(handlers.ClearChargingProfile(a.ocpp, {}), {"status": "Accepted"})
    mptest.eq(a.ocpp.smart.pending, None)
    b.plug("C")
    _run(a, b, 8)
    mptest.eq(_session_tag(a), None)         # nobody was authorized (free vend session)
    mptest.eq(a.ocpp.smart.profiles, [])
    mptest.eq(_offer(a), (16, "max"))
    # a running session: RemoteStart is refused, its profile is not kept either
    mptest.eq(_remote(a, "RS0", _txp(6, 8)), {"status": "Rejected"})
    mptest.eq(a.ocpp.smart.pending, None)
    mptest.eq(a.errors, 0)


def test_remote_start_profile_applies_to_the_transaction_it_creates_only():
    b = SimBoard()
    a = _agent(b)
    _run(a, b, 3)
    mptest.eq(_remote(a, "RS1", _txp(7, 10)), {"status": "Accepted"})
    b.plug("C")
    _run(a, b, 8)
    mptest.eq(_session_tag(a), "RS1")
    mptest.eq(_offer(a), (10, "ocpp"))      # offline too: a TxProfile holds for its transaction
    ref = a.ocpp._tx["ref"]
    mptest.eq([(q["id"], q["ref"], q["cid"]) for q in a.ocpp.smart.profiles], [(7, ref, 1)])
    b.unplug()
    _run(a, b, 3)
    mptest.eq(a.ocpp.smart.profiles, [])    # ended with its transaction
    # a remote start whose idTag does not start the next session: its profile is dropped
    mptest.eq(_remote(a, "RS2", _txp(8, 10)), {"status": "Accepted"})
    a.evse.authorize("CARD")                # a local card takes the connector first
    b.plug("C")
    _run(a, b, 8)
    mptest.eq(_session_tag(a), "CARD")
    mptest.eq(_offer(a), (16, "max"))
    mptest.eq(a.ocpp.smart.pending, None)
    b.unplug()
    _run(a, b, 3)
    # one that starts later than ConnectionTimeOut: not applied
    _configure(a, "ConnectionTimeOut", "30")
    mptest.eq(_remote(a, "RS3", _txp(9, 10)), {"status": "Accepted"})
    _run(a, b, 40)
    b.plug("C")
    _run(a, b, 8)
    mptest.eq(_session_tag(a), "RS3")       # the charging core's authorization lasts 120 s
    mptest.eq(_offer(a), (16, "max"))
    mptest.eq(a.ocpp.smart.profiles, [])
    mptest.eq(a.errors, 0)


def test_a_power_cut_ends_the_transaction_and_its_tx_profile():
    b = SimBoard()
    a = _agent(b)
    _run(a, b, 3)
    _profile(a, 1, 12)                      # a TxDefaultProfile stays
    mptest.eq(_remote(a, "RS4", _txp(11, 10)), {"status": "Accepted"})
    b.plug("C")
    _run(a, b, 8)
    mptest.eq(_offer(a), (10, "ocpp"))
    mptest.eq(sorted(q["id"] for q in a.ocpp.smart.profiles), [1, 11])
    a = None
    b2 = SimBoard(now_ms=b.ticks_ms())      # the power cut: the transaction ends (PowerLoss)
    a = _agent(b2, fresh=False)
    _run(a, b2, 2)
    mptest.eq([q["id"] for q in a.ocpp.smart.profiles], [1])
    with open(_dir + "/ocpp/profiles.json") as f:
        mptest.eq([q["id"] for q in json.load(f)], [1])
    b2.plug("C")                            # a new session: the TxDefaultProfile, not the old TxProfile
    _run(a, b2, 8)
    mptest.eq(_offer(a), (12, "ocpp"))
    mptest.eq(a.errors, 0)
