"""OCPP 1.6 smart charging on a virtual board against the `ocpp` CSMS:
TxDefaultProfile, TxProfile and ChargePointMaxProfile in A and W, stacking,
a schedule that changes over time, GetCompositeSchedule, ClearChargingProfile,
and limits above the rating (they cannot raise the offer). The offer is what
the board's pilot advertises (`offered_a`)."""
import datetime

import pytest
from ocpp.v16 import call

from tests.prep.csms import CSMS
from tools.vboard import VBoard


def _iso(dt_s=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=dt_s)
    return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _profile(pid, purpose, periods, unit="A", level=0, kind="Absolute", start=-60, **kw):
    sched = {"chargingRateUnit": unit,
             "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods]}
    if kind != "Relative":
        sched["startSchedule"] = _iso(start)
    p = {"chargingProfileId": pid, "stackLevel": level, "chargingProfilePurpose": purpose,
         "chargingProfileKind": kind, "chargingSchedule": sched}
    p.update(kw)
    return p


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cs = CSMS(interval=300).start()
    b = VBoard(str(tmp_path_factory.mktemp("sc") / "cps"), id="cps", ocpp=cs.url,
               config={"mqtt": {"host": ""}}, wdt_ms=3000).start()
    cs.wait(lambda: cs.calls("StatusNotification", "cps"), 30)
    yield b, cs
    b.stop()
    cs.stop()
    assert cs.errors == [], cs.errors


def _offer(b, amps, timeout=15):
    return b.wait_for(lambda: b.get()["offered_a"] == amps, timeout, what="offer %s A" % amps)


def test_TC_056_central_smart_charging_tx_default_profile(env):
    b, cs = env
    b.control("plug", state="C", max_current_a=32)
    _offer(b, 32)
    r = cs.call("cps", call.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile(
        1, "TxDefaultProfile", [(0, 10)])))
    assert r.status == "Accepted"
    _offer(b, 10)
    assert b.get()["source"] == "ocpp"


def test_TC_057_tx_profile_in_watts_overrides_tx_default(env):
    b, cs = env
    tid = cs.tx_id("local")
    # 4140 W at 230 V x 3 phases = 6 A
    r = cs.call("cps", call.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile(
        2, "TxProfile", [(0, 4140)], unit="W", transactionId=tid)))
    assert r.status == "Accepted"
    _offer(b, 6)
    comp = cs.call("cps", call.GetCompositeSchedule(connector_id=1, duration=60))
    assert comp.status == "Accepted"
    assert comp.charging_schedule["charging_schedule_period"][0]["limit"] == 6.0
    # a TxProfile for another transaction is refused and changes nothing
    r = cs.call("cps", call.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile(
        3, "TxProfile", [(0, 20)], transactionId=tid + 50)))
    assert r.status == "Rejected"
    assert b.get()["offered_a"] == 6


def test_charge_point_max_profile_caps_and_clear_restores(env):
    b, cs = env
    assert cs.call("cps", call.ClearChargingProfile(id=2)).status == "Accepted"
    _offer(b, 10)
    r = cs.call("cps", call.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile(
        4, "ChargePointMaxProfile", [(0, 8)])))
    assert r.status == "Rejected", "ChargePointMaxProfile belongs to connector 0"
    r = cs.call("cps", call.SetChargingProfile(connector_id=0, cs_charging_profiles=_profile(
        4, "ChargePointMaxProfile", [(0, 8)])))
    assert r.status == "Accepted"
    _offer(b, 8)
    assert cs.call("cps", call.ClearChargingProfile(charging_profile_purpose="ChargePointMaxProfile")) \
        .status == "Accepted"
    _offer(b, 10)
    assert cs.call("cps", call.ClearChargingProfile(id=99)).status == "Unknown"
    assert cs.call("cps", call.ClearChargingProfile()).status == "Accepted"
    _offer(b, 32)


def test_limits_above_the_rating_and_stacking_and_a_timed_schedule(env):
    b, cs = env
    r = cs.call("cps", call.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile(
        5, "TxDefaultProfile", [(0, 70)])))
    assert r.status == "Accepted"
    b.wait_for(lambda: b.get()["source"] != "ocpp" and b.get()["offered_a"] == 32, 10)
    # stack level 1 wins over level 0; its schedule drops to 12 A after 10 s.
    # The pilot changes its duty at most once per 5 s (IEC 61851-1, the charging
    # core's duty_interval_ms), reductions included: the first period must outlast
    # that spacing (the offer went to 32 A just before), or 16 A is never offered.
    r = cs.call("cps", call.SetChargingProfile(connector_id=1, cs_charging_profiles=_profile(
        6, "TxDefaultProfile", [(0, 16), (10, 12)], level=1, start=0)))
    assert r.status == "Accepted"
    _offer(b, 16)
    _offer(b, 12, 20)
    comp = cs.call("cps", call.GetCompositeSchedule(connector_id=0, duration=3600, charging_rate_unit="A"))
    assert comp.charging_schedule["charging_schedule_period"][0]["limit"] == 12.0
    assert cs.call("cps", call.ClearChargingProfile()).status == "Accepted"
    _offer(b, 32)


def test_bad_profiles_are_refused_and_change_nothing(env):
    b, cs = env
    bad = _profile(7, "TxDefaultProfile", [(5, 10)])          # first period must start at 0
    r = cs.raw("cps", [2, "s1", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": bad}])
    assert r[:3] == [4, "s1", "PropertyConstraintViolation"]
    bad = _profile(7, "TxDefaultProfile", [(0, 10)], kind="Recurring")   # no recurrencyKind
    r = cs.raw("cps", [2, "s2", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": bad}])
    assert r[:3] == [4, "s2", "OccurenceConstraintViolation"]
    assert b.get()["offered_a"] == 32
    b.control("unplug")


def test_TC_060_remote_start_with_a_profile_that_is_not_a_tx_profile_is_rejected(env):
    b, cs = env
    n = len(cs.calls("StartTransaction", "cps"))
    for bad in (_profile(20, "TxDefaultProfile", [(0, 8)], kind="Relative"),
                _profile(21, "TxProfile", [(0, 8)], kind="Relative", transactionId=7)):
        r = cs.call("cps", call.RemoteStartTransaction(id_tag="RS0", connector_id=1, charging_profile=bad))
        assert r.status == "Rejected", bad
    bad = _profile(22, "TxProfile", [(3, 8)], kind="Relative")    # first period must start at 0
    r = cs.raw("cps", [2, "rs1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "RS0",
                                                             "chargingProfile": bad}])
    assert r[:3] == [4, "rs1", "PropertyConstraintViolation"]
    # nothing changed: no authorization for RS0, no profile waiting
    b.control("plug", state="C", max_current_a=32)
    st = cs.wait(lambda: cs.calls("StartTransaction", "cps")[n:])[0]
    assert st["idTag"] == "local"
    _offer(b, 32)
    b.control("unplug")
    b.wait_for({"session_active": False}, 10)
    cs.wait(lambda: len(cs.calls("StopTransaction", "cps")) > n, 20)


def test_TC_059_remote_start_with_a_tx_profile_and_the_csms_going_quiet(env):
    b, cs = env
    prof = _profile(30, "TxProfile", [(0, 10)], kind="Relative")
    r = cs.call("cps", call.RemoteStartTransaction(id_tag="RS1", connector_id=1, charging_profile=prof))
    assert r.status == "Accepted"
    b.control("plug", state="C", max_current_a=32)
    tid = cs.tx_id("RS1")
    _offer(b, 10)
    assert b.get()["source"] == "ocpp"
    comp = cs.call("cps", call.GetCompositeSchedule(connector_id=1, duration=300))
    assert comp.status == "Accepted"
    assert comp.charging_schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 10.0}]
    # OfflineFallbackTimeout: a CSMS quiet for 3 s caps the offer at the installer's
    # fallback (6 A); the TxProfile stays in force, and applies again once it is heard
    assert cs.call("cps", call.ChangeConfiguration(key="OfflineFallbackTimeout", value="3")).status \
        == "Accepted"
    cs.stop()
    b.wait_for(lambda: b.get()["source"] == "fallback" and b.get()["offered_a"] == 6, 20,
               what="the fallback while the CSMS is quiet")
    assert b.get()["relay"], "charging goes on at the fallback"
    cs.start()
    _offer(b, 10, 30)
    assert b.get()["source"] == "ocpp"
    assert cs.call("cps", call.ChangeConfiguration(key="OfflineFallbackTimeout", value="0")).status \
        == "Accepted"
    assert cs.call("cps", call.RemoteStopTransaction(transaction_id=tid)).status == "Accepted"
    stop = cs.wait(lambda: [s for s in cs.calls("StopTransaction", "cps") if s["transactionId"] == tid], 20)
    assert stop[0]["reason"] == "Remote"
    # the TxProfile ended with its transaction
    comp = cs.call("cps", call.GetCompositeSchedule(connector_id=1, duration=300))
    assert comp.charging_schedule["charging_schedule_period"][0]["limit"] != 10.0
    b.control("unplug")
