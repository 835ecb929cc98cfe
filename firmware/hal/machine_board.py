# Shared implementation for boards driven through MicroPython's `machine`
# (esp32.py, rp2.py): CP PWM and burst sampling, PP, contactor, RCD, meter.
#
# This module never imports `machine`: the esp32/rp2 backends import it and
# pass it in (dependencies passed in, never created at import), so the
# front-end arithmetic and CP sampling here run unchanged on every port.
from micropython import const
from array import array
import time
from firmware.hal.board import Board, PP_OPEN, check_duty

_SPAN_MV = const(24000)   # -12 V .. +12 V
_WIN_US = const(1200)     # a CP burst must cover at least this (PWM period 1000 us)
_STEADY_N = const(16)     # samples averaged while no PWM runs
_PP_N = const(8)
_FULL12 = const(4095)     # ADC counts are used as 12 bit (read_u16 >> 4): small-int math


def duty_u16(duty):
    # The 16-bit PWM compare value for a duty in percent (0 and 65535 = steady).
    return int(check_duty(duty) * 65535 / 100 + 0.5)


def _num(name, v, lo, hi):
    if type(v) is bool or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ValueError("%s=%r outside %r..%r" % (name, v, lo, hi))
    return v


class CtMeter:
    # Energy meter from one current transformer on an ADC channel.
    #
    # The CT (with its burden, biased at mid-supply) gives `a_per_v` amps RMS per
    # volt RMS at the ADC. read() samples `samples` points `interval_us` apart
    # (default 200 x 100 us = one 50 Hz cycle, so the RMS is unbiased), removes
    # the DC bias, and integrates energy = grid_v * I * phases between calls
    # (trapezoid over the previous and the new power). The voltage is not
    # measured: `grid_v` is reported. Balanced phases are assumed (one CT on L1).
    # Call read() at the telemetry rate (it blocks ~20 ms); `energy_wh` is the
    # cheap attribute the control loop reads.
    #
    # Any object with read() -> (voltage_v, current_a, energy_wh) and an
    # `energy_wh` attribute can be plugged in instead (e.g. a Modbus meter).
    #

    def __init__(self, adc, ticks_ms, a_per_v=30.0, vref_mv=3300, grid_v=230.0,
                 phases=3, samples=200, interval_us=100):
        self._adc = adc
        self._ticks = ticks_ms
        self.a_per_v = _num("a_per_v", a_per_v, 0.001, 10000)
        self.vref_mv = _num("vref_mv", vref_mv, 100, 10000)
        self.grid_v = _num("grid_v", grid_v, 0, 1000)
        if phases not in (1, 3):
            raise ValueError("phases must be 1 or 3, got %r" % (phases,))
        self.phases = phases
        self._n = int(_num("samples", samples, 8, 5000))
        self._us = int(_num("interval_us", interval_us, 0, 100000))
        self.energy_wh = 0.0
        self.current_a = 0.0
        self._p_w = 0.0
        self._t = None

    def sample_current(self):
        adc, n, us = self._adc, self._n, self._us
        s = 0
        ss = 0
        for _ in range(n):
            v = adc.read_u16() >> 4
            s += v
            ss += v * v
            if us:
                time.sleep_us(us)
        mean = s / n
        var = ss / n - mean * mean
        rms_v = (var ** 0.5 if var > 0 else 0.0) * self.vref_mv / _FULL12 / 1000
        return rms_v * self.a_per_v

    def read(self):
        i = self.sample_current()
        now = self._ticks()
        p = self.grid_v * i * self.phases
        if self._t is not None:
            dt = time.ticks_diff(now, self._t)
            if dt > 0:
                self.energy_wh += (self._p_w + p) * 0.5 * dt / 3600000
        self._t = now
        self._p_w = p
        self.current_a = i
        return (self.grid_v, i, self.energy_wh)


# Pin-map keys shared by the machine backends (value None = not fitted).
PIN_KEYS = ("cp_pwm", "cp_adc", "pp_adc", "relay", "relay_fb", "rcd_fault",
            "rcd_test", "ct_adc", "temp_adc")

# Analog front-end defaults (all overridable as constructor keywords).
CALIB = {
    "vref_mv": 3300,         # ADC full scale (read_u16 65535) in mV
    "cp_adc_mv_m12": 250,    # ADC mV when CP is -12 V   (linear divider with
    "cp_adc_mv_p12": 3050,   # ADC mV when CP is +12 V    offset, headroom both ends)
    "cp_invert": False,      # True when the CP driver stage inverts the GPIO
    "cp_samples": 128,       # burst length for PWM plateau sampling
    "cp_band_mv": 400,       # min. plateau band (noise allowance) in CP mV
    "pp_pullup_ohm": 1000,   # PP pull-up resistor to pp_vpu_mv
    "pp_vpu_mv": 3300,
    "relay_active_high": True,
    "relay_fb_active_low": True,   # aux contact pulls the input to GND when closed
    "rcd_active_high": True,       # RDC-DD fault output high = fault
    "rcd_test_active_high": True,
    "ct_a_per_v": 30.0,      # e.g. SCT-013-030 (30 A per 1 V RMS)
    "grid_v": 230.0,
    "phases": 3,
    "ntc_r25": 10000,        # temp_adc: NTC to GND, pull-up ntc_pullup to vref
    "ntc_beta": 3950,
    "ntc_pullup": 10000,
}


class MachineBoard(Board):
    # Board on MicroPython's `machine` (PWM, ADC, Pin, WDT).
    #
    # `machine` is the module, `pins` a dict over PIN_KEYS (missing keys take the
    # backend's defaults), `calib` overrides CALIB. Outputs start safe: relay
    # open, RCD test off, CP steady +12 V.
    #

    def __init__(self, machine, default_pins, pins=None, meter=None, **calib):
        self._m = machine
        p = dict(default_pins)
        if pins:
            for k in pins:
                if k not in PIN_KEYS:
                    raise ValueError("unknown pin %r (known: %s)" % (k, ", ".join(PIN_KEYS)))
                p[k] = pins[k]
        c = dict(CALIB)
        for k in calib:
            if k not in CALIB:
                raise ValueError("unknown calibration %r" % (k,))
            c[k] = calib[k]
        vref = _num("vref_mv", c["vref_mv"], 100, 10000)
        m12 = _num("cp_adc_mv_m12", c["cp_adc_mv_m12"], 0, vref)
        p12 = _num("cp_adc_mv_p12", c["cp_adc_mv_p12"], 0, vref)
        if p12 - m12 < vref / 10:
            raise ValueError("cp_adc_mv_p12 must exceed cp_adc_mv_m12 by 10% of vref")
        if p["cp_pwm"] is None or p["cp_adc"] is None:
            raise ValueError("cp_pwm and cp_adc pins are required")
        self.pins = p
        self.calib = c
        self._vref = vref
        self._c_m12 = int(m12 * _FULL12 / vref + 0.5)
        self._c_dc = int(p12 * _FULL12 / vref + 0.5) - self._c_m12
        self._band_c = int(_num("cp_band_mv", c["cp_band_mv"], 0, 12000) * self._c_dc / _SPAN_MV) + 1
        n = int(_num("cp_samples", c["cp_samples"], 16, 2048))
        self._buf = array("H", bytes(2 * n))
        self._step_us = (_WIN_US + n - 1) // n
        self.cp_burst_us = 0   # duration of the last PWM burst (bring-up check)
        self._pp_pu = _num("pp_pullup_ohm", c["pp_pullup_ohm"], 1, 1000000)
        self._pp_full = int(_num("pp_vpu_mv", c["pp_vpu_mv"], 100, vref) * _FULL12 / vref)
        self._inv = bool(c["cp_invert"])
        self._duty = 100.0
        self._hi_mv = 12000
        self._lo_mv = None
        self._relay_on = 1 if c["relay_active_high"] else 0
        self._fb_on = 0 if c["relay_fb_active_low"] else 1
        self._rcd_on = 1 if c["rcd_active_high"] else 0
        self._rcdt_on = 1 if c["rcd_test_active_high"] else 0
        self._closed = False
        self._wdt = None
        Pin = machine.Pin
        # safe outputs first: contactor open, test winding off, then CP +12 V
        self._relay = None if p["relay"] is None else Pin(p["relay"], Pin.OUT, value=1 - self._relay_on)
        self._rcdt = None if p["rcd_test"] is None else Pin(p["rcd_test"], Pin.OUT, value=1 - self._rcdt_on)
        self._pwm = machine.PWM(Pin(p["cp_pwm"], Pin.OUT), freq=1000, duty_u16=self._u16(100.0))
        self._cp = self._adc(p["cp_adc"])
        self._pp = None if p["pp_adc"] is None else self._adc(p["pp_adc"])
        self._fb = None if p["relay_fb"] is None else Pin(
            p["relay_fb"], Pin.IN, Pin.PULL_UP if self._fb_on == 0 else Pin.PULL_DOWN)
        self._rcd = None if p["rcd_fault"] is None else Pin(p["rcd_fault"], Pin.IN)
        self._temp = None if p["temp_adc"] is None else self._adc(p["temp_adc"])
        if meter is None and p["ct_adc"] is not None:
            meter = CtMeter(self._adc(p["ct_adc"]), time.ticks_ms, a_per_v=c["ct_a_per_v"],
                            vref_mv=vref, grid_v=c["grid_v"], phases=c["phases"])
        self._meter = meter

    # -- backend hooks
    def _adc(self, pin):
        return self._m.ADC(self._m.Pin(pin))

    def _internal_temp(self):
        return None

    def _wdt_max_ms(self):
        return 0x7FFFFFFF

    # -- helpers
    def _u16(self, duty):
        v = duty_u16(duty)
        return 65535 - v if self._inv else v

    def _mv(self, c12):
        return (c12 - self._c_m12) * _SPAN_MV // self._c_dc - 12000

    def _burst(self):
        # Read the CP ADC n times, spread evenly over at least _WIN_US (more
        # than one 1 kHz period) so that both plateaus are always in the
        # buffer: after each read, spin until the next slot is due. When the
        # reads are slower than a slot, no time is spent spinning.
        buf = self._buf   # (no 4-way tuple unpack: that allocates)
        adc = self._cp
        n = len(buf)
        step = self._step_us
        t0 = time.ticks_us()
        due = t0
        for i in range(n):
            buf[i] = adc.read_u16() >> 4
            due = time.ticks_add(due, step)
            while time.ticks_diff(due, time.ticks_us()) > 0:
                pass
        self.cp_burst_us = time.ticks_diff(time.ticks_us(), t0)
        return n

    def _sample_cp(self):
        buf = self._buf
        if self._duty == 100.0 or self._duty == 0.0:
            s = 0
            adc = self._cp
            for _ in range(_STEADY_N):
                s += adc.read_u16() >> 4
            self._hi_mv = self._mv(s // _STEADY_N)
            self._lo_mv = None
            return
        n = self._burst()
        hi = lo = buf[0]
        for i in range(1, n):
            v = buf[i]
            if v > hi:
                hi = v
            elif v < lo:
                lo = v
        band = (hi - lo) >> 3
        if band < self._band_c:
            band = self._band_c
        if hi - lo <= 2 * band:  # flat (state E, or stuck): one level
            s = 0
            for i in range(n):
                s += buf[i]
            self._hi_mv = self._lo_mv = self._mv(s // n)
            return
        th, tl = hi - band, lo + band
        sh = nh = sl = nl = 0
        for i in range(n):
            v = buf[i]
            if v >= th:
                sh += v
                nh += 1
            elif v <= tl:
                sl += v
                nl += 1
        self._hi_mv = self._mv(sh // nh)
        self._lo_mv = self._mv(sl // nl)

    # -- the interface
    def ticks_ms(self):
        return time.ticks_ms()

    def cp_output(self, duty):
        if duty == self._duty and type(duty) is not bool:
            return  # unchanged: no rewrite (some ports restart the period)
        v = self._u16(duty)  # validates before anything changes
        self._pwm.duty_u16(v)
        self._duty = float(duty)

    def cp_read(self):
        self._sample_cp()
        return (self._hi_mv, self._lo_mv)

    def pp_read(self):
        if self._pp is None:
            return None
        s = 0
        for _ in range(_PP_N):
            s += self._pp.read_u16() >> 4
        c = s // _PP_N
        if c >= self._pp_full - 2:
            return PP_OPEN
        return self._pp_pu * c // (self._pp_full - c)

    def relay(self, closed):
        closed = bool(closed)
        if self._relay is not None:
            self._relay.value(self._relay_on if closed else 1 - self._relay_on)
        self._closed = closed

    def relay_feedback(self):
        if self._fb is None:  # no auxiliary contact: welding cannot be seen
            return self._closed
        return self._fb.value() == self._fb_on

    def rcd_fault(self):
        return self._rcd is not None and self._rcd.value() == self._rcd_on

    def rcd_test(self, on):
        if self._rcdt is None:
            raise OSError("no rcd_test pin fitted")
        self._rcdt.value(self._rcdt_on if on else 1 - self._rcdt_on)

    def meter(self):
        if self._meter is None:
            return (0.0, 0.0, 0.0)
        return self._meter.read()

    def temperature_c(self):
        if self._temp is None:
            return self._internal_temp()
        import math
        c = self._temp.read_u16() >> 4
        if c <= 0 or c >= _FULL12:
            return None  # NTC open or shorted
        r = self.calib["ntc_pullup"] * c / (_FULL12 - c)
        inv = 1 / 298.15 + math.log(r / self.calib["ntc_r25"]) / self.calib["ntc_beta"]
        return 1 / inv - 273.15

    def wdt_start(self, timeout_ms):
        if type(timeout_ms) is not int or not 1 <= timeout_ms <= self._wdt_max_ms():
            raise ValueError("wdt timeout %r outside 1..%d ms" % (timeout_ms, self._wdt_max_ms()))
        if self._wdt is not None:
            raise OSError("watchdog already running (it cannot be changed or stopped)")
        self._wdt = self._m.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        self._m.reset()

    def sense_into(self, s):
        self._sample_cp()
        s.cp_high_mv = self._hi_mv
        s.cp_low_mv = self._lo_mv
        s.pp_ohm = self.pp_read()
        s.rcd_fault = self.rcd_fault()
        s.relay_closed = self.relay_feedback()
        s.energy_wh = 0.0 if self._meter is None else self._meter.energy_wh
