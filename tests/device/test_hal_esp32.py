# ESP32 backend against the fake `machine` module (runs inside the unix port).
import sys
import micropython
import fake_machine as fm

sys.modules["machine"] = fm   # before the backend is imported
import mptest
from firmware.hal import create
from firmware.hal.board import PP_OPEN
from firmware.hal.machine_board import CtMeter
from firmware.hal.esp32 import Esp32Board, PINS

M12, P12, VREF = 250, 3050, 3300   # default front end (docs/hal.md)


def cp_u16(cp_mv):
    adc_mv = M12 + (cp_mv + 12000) * (P12 - M12) / 24000
    return int(adc_mv * 65535 / VREF + 0.5)


def pp_u16(ohm, pullup=1000):
    return int(3300 * ohm / (ohm + pullup) * 65535 / VREF + 0.5)


class S:
    pass


def setup():
    fm.clear()


def duties():
    return [c[2] for c in fm.find("PWM.duty_u16", PINS["cp_pwm"])]


def test_outputs_start_safe():
    Esp32Board()
    mptest.eq(fm.find("Pin", PINS["relay"])[0][4], 0, "relay starts open")
    mptest.eq(fm.find("Pin", PINS["rcd_test"])[0][4], 0, "rcd test off")
    mptest.eq(fm.find("PWM", PINS["cp_pwm"]), [("PWM", PINS["cp_pwm"], 1000, 65535)])
    mptest.eq(fm.find("ADC", PINS["cp_adc"]), [("ADC", PINS["cp_adc"], fm.ADC.ATTN_11DB)])


def test_duty_u16_for_32a():
    b = Esp32Board()
    b.cp_output(32 / 0.6)
    mptest.eq(duties(), [round(0.5333333333 * 65535)])
    mptest.eq(duties(), [34952])
    b.cp_output(10.0)                   # 6 A
    mptest.eq(duties()[-1], 6554)


def test_steady_plus_and_minus_12v():
    b = Esp32Board()
    b.cp_output(50)
    b.cp_output(100.0)
    b.cp_output(0.0)
    mptest.eq(duties(), [32768, 65535, 0])
    b.cp_output(0.0)                    # unchanged duty: no rewrite
    mptest.eq(len(duties()), 3)


def test_cp_invert_flips_duty():
    b = Esp32Board(cp_invert=True)
    mptest.eq(fm.find("PWM")[0][3], 0, "steady +12 V through an inverting stage")
    b.cp_output(32 / 0.6)
    mptest.eq(duties(), [65535 - 34952])


def test_bad_duty_changes_nothing():
    b = Esp32Board()
    b.cp_output(25.0)
    n = len(fm.calls)
    for bad in (100.5, -1, "50", None, True, float("nan")):
        e = mptest.raises((ValueError, TypeError), b.cp_output, bad)
        mptest.true("duty" in str(e), "message names the duty:", e)
    mptest.eq(len(fm.calls), n, "no pin touched")
    mptest.eq(b._duty, 25.0)


def test_cp_steady_read_scaled():
    b = Esp32Board()
    for mv in (12000, 9000, 6000, 3000, 0, -12000):
        fm.script_adc(PINS["cp_adc"], [cp_u16(mv)])
        hi, lo = b.cp_read()
        mptest.near(hi, mv, 20, "level", mv)
        mptest.eq(lo, None)


def test_cp_pwm_plateaus_ignore_edges():
    b = Esp32Board()
    b.cp_output(32 / 0.6)
    # one 1 kHz period: high plateau, a falling edge, low plateau, a rising edge
    period = [cp_u16(6000)] * 9 + [cp_u16(2000), cp_u16(-5000)] + [cp_u16(-12000)] * 7 + [cp_u16(-3000)]
    fm.script_adc(PINS["cp_adc"], period)
    hi, lo = b.cp_read()
    mptest.near(hi, 6000, 20)
    mptest.near(lo, -12000, 20)
    mptest.true(fm.adc_reads[PINS["cp_adc"]] >= len(period), "burst covers a period")


def test_cp_pwm_plateau_averages_noise_and_missing_diode():
    b = Esp32Board()
    b.cp_output(25.0)
    hi_s = [cp_u16(9000 + d) for d in (-150, 90, 40, -60, 120)]
    lo_s = [cp_u16(-9000 + d) for d in (100, -80, 30, -50, 0, 20, -20, 10, 60, -70, 0, 30, -30, 15, -15)]
    fm.script_adc(PINS["cp_adc"], hi_s + lo_s)
    hi, lo = b.cp_read()
    mptest.near(hi, 9000, 40)
    mptest.near(lo, -9000, 40, "no diode: low mirrors high")


def test_cp_pwm_flat_state_e():
    b = Esp32Board()
    b.cp_output(50.0)
    fm.script_adc(PINS["cp_adc"], [cp_u16(0), cp_u16(60), cp_u16(-60)])
    hi, lo = b.cp_read()
    mptest.near(hi, 0, 40)
    mptest.near(lo, 0, 40)


def test_cp_burst_spans_more_than_a_pwm_period():
    b = Esp32Board(cp_samples=32)
    b.cp_output(50.0)
    fm.script_adc(PINS["cp_adc"], [cp_u16(9000), cp_u16(-12000)])
    b.cp_read()
    mptest.eq(fm.adc_reads[PINS["cp_adc"]], 32)
    mptest.true(b.cp_burst_us >= 1200, "burst", b.cp_burst_us, "us must cover 1.2 periods")
    b.cp_output(100.0)
    b.cp_read()
    mptest.eq(fm.adc_reads[PINS["cp_adc"]], 32 + 16, "steady level: a short average")


def test_pp_scaling_and_open():
    b = Esp32Board()
    for ohm in (100, 220, 680, 1500, 4500):
        fm.script_adc(PINS["pp_adc"], [pp_u16(ohm)])
        mptest.near(b.pp_read(), ohm, ohm * 0.03 + 2, "pp", ohm)
    fm.script_adc(PINS["pp_adc"], [65535])
    mptest.eq(b.pp_read(), PP_OPEN)
    mptest.eq(Esp32Board(pins={"pp_adc": None}).pp_read(), None, "tethered")


def test_relay_drive_and_feedback():
    b = Esp32Board()
    rp, fp = PINS["relay"], PINS["relay_fb"]
    mptest.eq(fm.find("Pin", fp)[0][3], fm.Pin.PULL_UP)
    b.relay(True)
    mptest.eq(fm.find("Pin.value", rp)[-1], ("Pin.value", rp, 1))
    fm.set_input(fp, 0)           # aux contact closed pulls to GND
    mptest.eq(b.relay_feedback(), True)
    fm.set_input(fp, 1)
    mptest.eq(b.relay_feedback(), False)
    b.relay(False)
    mptest.eq(fm.find("Pin.value", rp)[-1], ("Pin.value", rp, 0))
    inv = Esp32Board(relay_active_high=False, pins={"relay": 5, "relay_fb": None})
    inv.relay(True)
    mptest.eq(fm.find("Pin.value", 5)[-1], ("Pin.value", 5, 0))
    mptest.eq(inv.relay_feedback(), True, "no aux contact: mirrors the command")


def test_rcd_input_and_test_winding():
    b = Esp32Board()
    fm.set_input(PINS["rcd_fault"], 0)
    mptest.eq(b.rcd_fault(), False)
    fm.set_input(PINS["rcd_fault"], 1)
    mptest.eq(b.rcd_fault(), True)
    b.rcd_test(True)
    mptest.eq(fm.find("Pin.value", PINS["rcd_test"])[-1][2], 1)
    b.rcd_test(False)
    mptest.eq(fm.find("Pin.value", PINS["rcd_test"])[-1][2], 0)
    mptest.raises(OSError, Esp32Board(pins={"rcd_test": None}).rcd_test, True)


def test_watchdog_start_feed_and_bad_timeout():
    b = Esp32Board()
    b.wdt_feed()                     # before start: nothing to feed
    mptest.eq(fm.find("WDT.feed"), [])
    for bad in (0, -5, 1.5, "1000"):
        mptest.raises(ValueError, b.wdt_start, bad)
    mptest.eq(fm.find("WDT"), [], "bad timeout starts nothing")
    b.wdt_start(5000)
    b.wdt_feed()
    b.wdt_feed()
    mptest.eq(fm.find("WDT"), [("WDT", 5000)])
    mptest.eq(len(fm.find("WDT.feed")), 2)
    mptest.raises(OSError, b.wdt_start, 6000)


def test_reset_calls_machine_reset():
    b = Esp32Board()
    mptest.raises(fm.Reset, b.reset)
    mptest.eq(fm.calls[-1], ("reset",))


def test_sense_into_fills_without_allocating():
    b = Esp32Board()
    b.cp_output(32 / 0.6)
    fm.script_adc(PINS["cp_adc"], [cp_u16(6000)] * 5 + [cp_u16(-12000)] * 5)
    fm.script_adc(PINS["pp_adc"], [pp_u16(220)])
    fm.set_input(PINS["relay_fb"], 0)
    fm.set_input(PINS["rcd_fault"], 0)
    s = S()
    b.sense_into(s)                  # first call may set up pacing
    s.cp_high_mv = None
    micropython.heap_lock()
    try:
        b.sense_into(s)
    finally:
        micropython.heap_unlock()
    mptest.near(s.cp_high_mv, 6000, 20)
    mptest.near(s.cp_low_mv, -12000, 20)
    mptest.near(s.pp_ohm, 220, 8)
    mptest.eq((s.rcd_fault, s.relay_closed, s.energy_wh), (False, True, 0.0))


def test_ct_meter_rms_and_energy():
    amp = int(1000 / 3300 * 65535)   # square wave +-1 V around mid-supply: 1 V RMS
    fm.script_adc(PINS["ct_adc"], [32768 + amp, 32768 - amp])
    b = Esp32Board()
    v, i, wh = b.meter()
    mptest.eq(v, 230.0)
    mptest.near(i, 30.0, 0.1)
    mptest.eq(wh, 0.0)
    t = [0]
    m = CtMeter(fm.ADC(PINS["ct_adc"]), lambda: t[0], interval_us=0)
    m.read()
    t[0] = 3600000                    # one hour at a constant 30 A, 3 phases
    v, i, wh = m.read()
    mptest.near(wh, 230 * 30 * 3, 20)
    mptest.eq(wh, m.energy_wh)
    mptest.raises(ValueError, CtMeter, None, None, phases=2)


def test_no_meter_reads_zeros():
    mptest.eq(Esp32Board(pins={"ct_adc": None}).meter(), (0.0, 0.0, 0.0))


def test_ntc_temperature():
    b = Esp32Board()
    fm.script_adc(PINS["temp_adc"], [32768])   # NTC = pull-up: 25 C
    mptest.near(b.temperature_c(), 25.0, 0.2)
    fm.script_adc(PINS["temp_adc"], [0])
    mptest.eq(b.temperature_c(), None, "shorted NTC")
    mptest.eq(Esp32Board(pins={"temp_adc": None}).temperature_c(), None, "no esp32 module here")


def test_bad_configuration_is_refused():
    mptest.raises(ValueError, Esp32Board, pins={"cp_pmw": 5})
    mptest.raises(ValueError, Esp32Board, pins={"cp_adc": None})
    mptest.raises(ValueError, Esp32Board, cp_gain=3)
    mptest.raises(ValueError, Esp32Board, cp_adc_mv_m12=3000, cp_adc_mv_p12=1000)
    mptest.eq(fm.find("PWM"), [], "nothing driven by a refused configuration")


def test_create_by_name():
    b = create("esp32", pins={"relay": 5})
    mptest.true(isinstance(b, Esp32Board))
    mptest.eq(b.pins["relay"], 5)
    mptest.raises(ValueError, create, "esp8266")
