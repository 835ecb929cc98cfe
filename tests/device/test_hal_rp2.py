# RP2040 backend against the fake `machine` module (runs inside the unix port).
import sys
import fake_machine as fm

sys.modules["machine"] = fm   # before the backend is imported
import mptest
from firmware.hal import create
from firmware.hal.rp2 import Rp2Board


def cp_u16(cp_mv, m12=250, p12=3050):
    adc_mv = m12 + (cp_mv + 12000) * (p12 - m12) / 24000
    return int(adc_mv * 65535 / 3300 + 0.5)


def setup():
    fm.clear()


def test_pin_map_and_safe_start():
    Rp2Board()
    mptest.eq(fm.find("PWM"), [("PWM", 16, 1000, 65535)])
    mptest.eq(fm.find("ADC", 26), [("ADC", 26, None)], "rp2 ADC has no attenuation")
    mptest.eq(fm.find("Pin", 15)[0][4], 0, "relay open")
    mptest.eq(fm.find("Pin", 12)[0][4], 0, "rcd test off")


def test_duty_u16_for_32a_and_steady_levels():
    b = Rp2Board()
    b.cp_output(32 / 0.6)
    b.cp_output(100)
    b.cp_output(0)
    b.cp_output(5.0)                 # digital communication
    mptest.eq([c[2] for c in fm.find("PWM.duty_u16", 16)], [34952, 65535, 0, 3277])


def test_bad_duty_changes_nothing():
    b = Rp2Board()
    n = len(fm.calls)
    mptest.raises(ValueError, b.cp_output, 120)
    mptest.raises(TypeError, b.cp_output, "x")
    mptest.eq(len(fm.calls), n)


def test_cp_levels_with_custom_calibration():
    cal = {"cp_adc_mv_m12": 0, "cp_adc_mv_p12": 3300}   # full-range divider
    b = Rp2Board(**cal)
    fm.script_adc(26, [cp_u16(9000, 0, 3300)])
    hi, lo = b.cp_read()
    mptest.near(hi, 9000, 20)
    mptest.eq(lo, None)
    b.cp_output(25.0)
    fm.script_adc(26, [cp_u16(9000, 0, 3300)] * 3 + [cp_u16(-12000, 0, 3300)] * 9)
    hi, lo = b.cp_read()
    mptest.near(hi, 9000, 20)
    mptest.near(lo, -12000, 20)


def test_pp_custom_pullup():
    b = Rp2Board(pp_pullup_ohm=330)
    fm.script_adc(27, [int(3300 * 680 / (680 + 330) * 65535 / 3300)])
    mptest.near(b.pp_read(), 680, 15)


def test_relay_feedback_and_rcd():
    b = Rp2Board()
    b.relay(True)
    mptest.eq(fm.find("Pin.value", 15)[-1], ("Pin.value", 15, 1))
    fm.set_input(14, 1)
    mptest.eq(b.relay_feedback(), False, "welded/stuck check: aux contact open")
    fm.set_input(14, 0)
    mptest.eq(b.relay_feedback(), True)
    fm.set_input(13, 1)
    mptest.eq(b.rcd_fault(), True)
    lo = Rp2Board(rcd_active_high=False)
    mptest.eq(lo.rcd_fault(), False)


def test_watchdog_limit():
    b = Rp2Board()
    mptest.raises(ValueError, b.wdt_start, 8389)
    mptest.eq(fm.find("WDT"), [])
    b.wdt_start(8388)
    b.wdt_feed()
    mptest.eq(fm.find("WDT") + fm.find("WDT.feed"), [("WDT", 8388), ("WDT.feed",)])


def test_chip_temperature_sensor():
    b = Rp2Board()
    fm.script_adc(4, [int(0.706 / 3.3 * 65535)])
    mptest.near(b.temperature_c(), 27.0, 0.1)
    fm.script_adc(4, [int(0.689 / 3.3 * 65535)])
    mptest.near(b.temperature_c(), 37.0, 0.2)


def test_reset():
    mptest.raises(fm.Reset, Rp2Board().reset)
    mptest.eq(fm.find("reset"), [("reset",)])


def test_create_by_name():
    mptest.true(isinstance(create("rp2"), Rp2Board))
