# Test rig for the charging core (imported by the other test_evse_* modules):
# an Evse, one reused Sense, virtual time, and a minimal vehicle whose CP
# levels follow the pilot the Evse drives (the low level follows the diode).
import mptest
from firmware.evse import Evse, Sense

MASK = (1 << 30) - 1  # the core's default ticks period is 2**30

HI = {"A": 12000, "B": 9000, "C": 6000, "D": 3000, "E": 0}
T0 = 5 * 10**11  # virtual time does not start at 0


class Rig:
    def __init__(self, max_current_a=32, period=20, t0=T0, **kw):
        # the power-on self-test (off by default in the core, on in the agent)
        # has its own tests (test_evse_selftest.py, test_evse_agent.py)
        self.e = Evse(max_current_a, **kw)
        self.s = Sense(cp_high_mv=12000)
        self.t = t0
        self.period = period
        self.hi = 12000  # the vehicle's CP high level (mV)
        self.diode = True
        self.pp = None
        self.rcd = False
        self.weld = False  # feedback stays closed
        self.stuck = False  # feedback stays open
        self.fb_lag = 0  # feedback follows the command this many steps late
        self._hist = []
        self.energy = None
        self.current = None  # measured current (A)
        self.temp = None  # temperature (C)
        self.rcd_follows_test = True  # the RCD input trips while rcd_test is on
        self.c = None

    def ev(self, letter):
        self.hi = HI[letter]

    def step(self, dt=None):
        self.t += self.period if dt is None else dt
        s, c = self.s, self.c
        duty = 100.0 if c is None else c.duty
        relay = False if c is None else c.relay
        if self.fb_lag:
            self._hist.append(relay)
            if len(self._hist) > self.fb_lag:
                relay = self._hist.pop(0)
            else:
                relay = False
        if duty == 0.0:  # we drive -12 V: the high level reads -12 V
            s.cp_high_mv, s.cp_low_mv = -12000, None
        else:
            s.cp_high_mv = self.hi
            s.cp_low_mv = None if duty == 100.0 else (-12000 if self.diode else -self.hi)
        s.pp_ohm = self.pp
        s.rcd_fault = self.rcd or (self.rcd_follows_test and c is not None and c.rcd_test)
        s.relay_closed = True if self.weld else (False if self.stuck else relay)
        s.energy_wh = self.energy
        s.current_a = self.current
        s.temperature_c = self.temp
        self.c = self.e.step(self.t & MASK, s)  # now_ms: a wrapping ticks value
        return self.c

    def run(self, ms):
        """Step for `ms` of virtual time; returns the last command."""
        end = self.t + ms
        while self.t < end:
            self.step()
        return self.c

    def until(self, pred, limit_ms):
        """Step until pred(cmd); the elapsed ms, or None when limit_ms passed."""
        t0 = self.t
        while self.t - t0 <= limit_ms:
            if pred(self.step()):
                return self.t - t0
        return None

    def charging(self, letter="C"):
        """Plug in, let the PWM start, request charge; asserts the relay closes."""
        self.ev("B")
        self.run(200)
        self.ev(letter)
        dt = self.until(lambda c: c.relay, 3000)
        mptest.true(dt is not None, "relay did not close in", letter, self.c.state, self.c.duty,
                    self.c.fault)
        return self.c


def pwm(c):
    return 0.0 < c.duty < 100.0


def test_rig_vehicle_follows_pilot():
    r = Rig()
    mptest.eq(r.step().state, "A")
    r.ev("B")
    r.run(100)
    mptest.eq((r.c.state, pwm(r.c)), ("B", True))
    mptest.eq(r.s.cp_low_mv, -12000)
    r.charging()
    r.step()
    mptest.eq((r.c.state, r.c.relay, r.s.relay_closed), ("C", True, True))
