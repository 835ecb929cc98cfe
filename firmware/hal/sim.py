# Simulated board for the unix port: vehicle, grid, contactor, RCD, meter,
# temperature and watchdog, all in VIRTUAL time. Nothing moves until the test
# or the virtual-board process calls advance(ms).
from micropython import const
import time
from firmware.hal.board import check_duty

TICKS_MASK = time.ticks_add(0, -1)  # ticks period - 1 of this port (2**30 - 1 on boards)
_M16 = const(0xFFFF)   # noise generator state: 16 bits, a small int on every port


class SimReset(Exception):
    # Raised by SimBoard.reset(): the virtual board process restarts the agent.
    pass


def _offered_a(duty):
    # current advertised by a PWM duty (IEC 61851-1 table, vehicle side)
    if duty < 8 or duty > 97:
        return 0.0
    if duty < 10:
        return 6.0
    if duty <= 85:
        return duty * 0.6
    if duty <= 96:
        return min((duty - 64) * 2.5, 80.0)
    return 80.0


def _pos(name, v, allow_zero=False):
    if type(v) is bool or not isinstance(v, (int, float)) or not (v >= 0 if allow_zero else v > 0):
        raise ValueError("%s=%r must be a %s number" % (name, v, "non-negative" if allow_zero else "positive"))
    return v


class SimBoard:
    # Simulated charger board. See docs/hal.md for the controls.
    #
    # Vehicle: plug(), unplug(), ev_state('B'|'C'|'D'), short_cp().
    # Contactor: feedback follows the command after relay_delay_ms; weld(),
    # stick_open(), repair(). RCD: trip(), rcd_reset(); rcd_test(True) trips it.
    # Grid: grid(voltage_v, phases). Meter integrates V * I * phases.
    # reset() raises SimReset (and counts it in `resets`).

    def __init__(self, now_ms=0, noise_mv=0, seed=1, grid_v=230.0, phases=3,
                 relay_delay_ms=30, temperature_c=25.0):
        if type(now_ms) is not int or now_ms < 0:
            raise ValueError("now_ms=%r must be a non-negative int" % (now_ms,))
        if type(relay_delay_ms) is not int or relay_delay_ms < 0:
            raise ValueError("relay_delay_ms=%r must be a non-negative int" % (relay_delay_ms,))
        _pos("noise_mv", noise_mv, True)
        if type(seed) is not int:
            raise ValueError("seed must be an int")
        self.now_ms = now_ms          # unwrapped virtual time
        self.noise_mv = int(noise_mv)
        self._rng = (seed & _M16) or 1
        self.relay_delay_ms = relay_delay_ms
        self.grid_v = 230.0
        self.phases = 3
        self.grid(grid_v, phases)
        self.temp_c = temperature_c
        # EVSE outputs (read-back)
        self.duty = 100.0
        self.relay_commanded = False
        self.rcd_test_on = False
        self.rcd_test_works = True    # False: the test winding does not trip the RCD
        self._test_trip = False       # the trip was caused by the test current alone
        # contactor
        self.contacts_closed = False
        self.welded = False
        self.stuck_open = False
        self._pending_at = None
        # vehicle
        self.plugged = False
        self.ev = "A"
        self.diode = True
        self.ev_max_a = 0
        self.ev_overdraw_a = 0.0      # a faulty EV drawing this much above the offer
        self.cable_pp = None
        self.shorted = False
        # RCD, meter, watchdog
        self.rcd_tripped = False
        self.current_a = 0.0
        self.energy_wh = 0.0
        self.wdt_timeout_ms = None
        self._wdt_deadline = 0
        self.wdt_feeds = 0
        self.resets = 0
        self.reset_requested = False

    # -- virtual time and physics
    def advance(self, ms):
        # Move virtual time forward by ms, integrating energy and letting the
        # contactor follow its command.
        if type(ms) is not int or ms < 0:
            raise ValueError("advance(ms=%r): a non-negative int" % (ms,))
        end = self.now_ms + ms
        while True:
            t = end
            pa = self._pending_at
            if pa is not None and pa <= end:
                t = pa
            dt = t - self.now_ms
            if dt > 0 and self.current_a:
                self.energy_wh += self.grid_v * self.current_a * self.phases * dt / 3600000
            self.now_ms = t
            if pa is not None and pa == t:
                self._pending_at = None
                if self.relay_commanded:
                    self.contacts_closed = not self.stuck_open
                else:
                    self.contacts_closed = self.welded and self.contacts_closed
                self._update()
            if t >= end:
                return

    def _update(self):
        i = 0.0
        if (self.contacts_closed and self.plugged and not self.shorted
                and (self.ev == "C" or self.ev == "D")):
            i = min(_offered_a(self.duty), float(self.ev_max_a)) + self.ev_overdraw_a
        self.current_a = i

    def _noise(self):
        n = self.noise_mv
        if not n:
            return 0
        # 16-bit xorshift (7, 9, 8; period 2**16 - 1): every intermediate
        # stays far below 2**30, so nothing is boxed on a 32-bit port
        x = self._rng
        x ^= (x << 7) & _M16
        x ^= x >> 9
        x ^= (x << 8) & _M16
        self._rng = x
        return x % (2 * n + 1) - n

    def _level(self):
        if not self.plugged:
            return 12000
        if self.ev == "B":
            return 9000
        if self.ev == "C":
            return 6000
        return 3000

    # -- vehicle / grid / fault controls
    def plug(self, state="B", diode=True, max_current_a=32, pp_ohm=None):
        if state not in ("B", "C", "D"):
            raise ValueError("plug state %r: one of B, C, D" % (state,))
        _pos("max_current_a", max_current_a)
        if pp_ohm is not None:
            _pos("pp_ohm", pp_ohm)
        self.plugged = True
        self.ev = state
        self.diode = bool(diode)
        self.ev_max_a = max_current_a
        self.cable_pp = pp_ohm
        self._update()

    def unplug(self):
        self.plugged = False
        self.ev = "A"
        self.cable_pp = None
        self.shorted = False
        self._update()

    def ev_state(self, letter):
        if not self.plugged:
            raise ValueError("ev_state(%r): no vehicle plugged" % (letter,))
        if letter not in ("B", "C", "D"):
            raise ValueError("ev_state %r: one of B, C, D" % (letter,))
        self.ev = letter
        self._update()

    def short_cp(self, on=True):
        # CP shorted to PE (state E): both levels read 0 V.
        self.shorted = bool(on)
        self._update()

    def grid(self, voltage_v=230, phases=3):
        _pos("voltage_v", voltage_v, True)
        if phases not in (1, 3):
            raise ValueError("phases must be 1 or 3, got %r" % (phases,))
        self.grid_v = float(voltage_v)
        self.phases = phases

    def weld(self):
        # The main contacts weld: once closed they stay closed (and the
        # auxiliary contact reports closed) whatever the command.
        self.welded = True

    def stick_open(self):
        # The contactor no longer closes (coil or contact failure).
        self.stuck_open = True
        self.contacts_closed = False
        self._update()

    def repair(self):
        self.welded = False
        self.stuck_open = False
        if self.contacts_closed != self.relay_commanded:
            self._pending_at = self.now_ms + self.relay_delay_ms

    def trip(self):
        self._test_trip = False
        self.rcd_tripped = True

    def rcd_reset(self):
        self.rcd_tripped = self.rcd_test_on  # stays tripped while the test current flows

    def set_temperature(self, c):
        if type(c) is bool or not isinstance(c, (int, float)):
            raise ValueError("temperature %r is not a number" % (c,))
        self.temp_c = c

    def watchdog_expired(self):
        # True when the watchdog runs and its deadline passed without a feed.
        return self.wdt_timeout_ms is not None and self.now_ms > self._wdt_deadline

    # -- the board interface
    def ticks_ms(self):
        return self.now_ms & TICKS_MASK

    def cp_output(self, duty):
        if duty == self.duty and type(duty) is not bool:
            return
        self.duty = check_duty(duty)
        self._update()

    def _sample(self, s):
        if self.shorted:
            hi = lo = 0
        else:
            hi = self._level()
            lo = -12000 if (self.diode or not self.plugged) else -hi
        d = self.duty
        if d == 100.0:
            lo = None
        elif d == 0.0:
            hi = lo
            lo = None
        hi += self._noise()
        if lo is not None:
            lo += self._noise()
        if s is None:
            return (hi, lo)
        s.cp_high_mv = hi
        s.cp_low_mv = lo

    def cp_read(self):
        return self._sample(None)

    def pp_read(self):
        return self.cable_pp if self.plugged else None

    def relay(self, closed):
        closed = bool(closed)
        if closed != self.relay_commanded:
            self.relay_commanded = closed
            self._pending_at = self.now_ms + self.relay_delay_ms
            if not self.relay_delay_ms:
                self.advance(0)

    def relay_feedback(self):
        return self.contacts_closed

    def rcd_fault(self):
        return self.rcd_tripped

    def rcd_test(self, on):
        # a trip caused by the test current alone ends with it (non-latching RDC-DD)
        self.rcd_test_on = bool(on)
        if on and self.rcd_test_works:
            self._test_trip = not self.rcd_tripped
            self.rcd_tripped = True
        elif not on and self._test_trip:
            self._test_trip = False
            self.rcd_tripped = False

    def meter(self):
        return (self.grid_v, self.current_a, self.energy_wh)

    def temperature_c(self):
        return self.temp_c

    def wdt_start(self, timeout_ms):
        if type(timeout_ms) is not int or timeout_ms < 1:
            raise ValueError("wdt timeout %r must be a positive int" % (timeout_ms,))
        if self.wdt_timeout_ms is not None:
            raise OSError("watchdog already running")
        self.wdt_timeout_ms = timeout_ms
        self._wdt_deadline = self.now_ms + timeout_ms

    def wdt_feed(self):
        if self.wdt_timeout_ms is not None:
            self._wdt_deadline = self.now_ms + self.wdt_timeout_ms
            self.wdt_feeds += 1

    def reset(self):
        self.resets += 1
        self.reset_requested = True
        raise SimReset("board reset at %d ms" % self.now_ms)

    def sense_into(self, s):
        self._sample(s)
        s.pp_ohm = self.cable_pp if self.plugged else None
        s.rcd_fault = self.rcd_tripped
        s.relay_closed = self.contacts_closed
        s.energy_wh = self.energy_wh
        s.current_a = self.current_a
        s.temperature_c = self.temp_c
