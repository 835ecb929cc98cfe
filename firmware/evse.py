# IEC 61851-1 charging core: control pilot (CP) states, PWM current offer,
# contactor (relay) rules, current limits and charging sessions.
#
# Pure logic: no I/O, no `machine`, no clock of its own. The agent calls
# step(now_ms, sense) once per control period (10-20 ms) and applies the
# returned Command. step() allocates nothing on the steady path (the duty float
# is built only when the offered current changes). Rules, thresholds, fault
# codes and session records: docs/charging.md.
try:
    from micropython import const
except ImportError:  # CPython (documentation tools only)
    def const(x):
        return x

# CP high level bands in mV (debounced classification)
_A_MAX = const(13500)
_A_MIN = const(10500)
_B_MIN = const(7500)
_C_MIN = const(4500)
_D_MIN = const(1500)
_E_MIN = const(-1500)
# CP low level during PWM: the vehicle diode keeps it near -12 V
_LO_MIN = const(-13500)
_LO_MAX = const(-10500)

# debounced CP states; _UNK until the first debounce completes (and after F)
_A = const(0)
_B = const(1)
_C = const(2)
_D = const(3)
_E = const(4)
_BAD = const(5)
_UNK = const(6)
_LETTER = ("A", "B", "C", "D", "E", "E", "A")

# PP cable classes: 0 = invalid, 255 = tethered (no cable limit)
_PP_NONE = const(255)

# fault bits, in reporting priority order
_F_WELDED = const(1)
_F_RCD_LATCH = const(2)
_F_RCD_TRIP = const(4)
_F_CP = const(8)
_F_DIODE = const(16)
_F_STUCK = const(32)
_F_PP = const(64)
_F_VENT = const(128)
_LATCHED = const(3)  # welded | rcd_latched: only clear_faults(); pilot F
_STICKY = const(48)  # diode | stuck: until unplug or clear_faults()
_CODES = ("relay_welded", "rcd_latched", "rcd_trip", "cp_error", "diode_missing",
          "relay_stuck_open", "pp_invalid", "ventilation_required")

# pilot output modes
_M_OFF = const(0)  # steady +12 V
_M_PWM = const(1)
_M_F = const(2)  # steady -12 V

_DUTY_OFF = 100.0
_DUTY_F = 0.0
_NLIM = const(8)
_RESERVED = ("max", "cable", "fallback")


def _fault_code(bits):
    if not bits:
        return None
    i = 0
    while not bits & 1:
        bits >>= 1
        i += 1
    return _CODES[i]


def _is_num(x):
    t = type(x)
    return (t is int or t is float) and x == x  # not bool, not nan


def duty_for_current(amps):
    """PWM duty (percent) advertising `amps` per IEC 61851-1.

    6..51 A: amps / 0.6; 51..80 A: amps / 2.5 + 64; below 6 A: 100.0 (no PWM,
    steady +12 V: nothing may be offered). ValueError outside 0..80 A.
    """
    if not _is_num(amps) or amps < 0 or amps > 80:
        raise ValueError("current %r A outside 0..80" % (amps,))
    if amps < 6:
        return _DUTY_OFF
    if amps <= 51:
        return amps * 5 / 3
    return amps / 2.5 + 64


def current_for_duty(duty):
    """Current (A) a vehicle reads from a PWM duty (IEC 61851-1 table A.8).

    < 8 %: 0.0 (this includes 5 % = digital communication only: the current
    is negotiated by ISO 15118, not advertised); 8..10 %: 6.0; 10..85 %:
    duty * 0.6; 85..96 %: (duty - 64) * 2.5; 96..97 %: 80.0; > 97 % (and the
    steady 100 %): 0.0. ValueError outside 0..100.
    """
    if not _is_num(duty) or duty < 0 or duty > 100:
        raise ValueError("duty %r outside 0..100 %%" % (duty,))
    if duty < 8 or duty > 97:
        return 0.0
    if duty < 10:
        return 6.0
    if duty <= 85:
        return duty * 3 / 5
    if duty <= 96:
        return (duty - 64) * 2.5
    return 80.0


class Sense:
    """Readings of one control period. The agent keeps one and updates it."""
    __slots__ = ("cp_high_mv", "cp_low_mv", "pp_ohm", "rcd_fault", "relay_closed", "energy_wh")

    def __init__(self, cp_high_mv=None, cp_low_mv=None, pp_ohm=None, rcd_fault=False,
                 relay_closed=False, energy_wh=None):
        self.cp_high_mv = cp_high_mv
        self.cp_low_mv = cp_low_mv
        self.pp_ohm = pp_ohm
        self.rcd_fault = rcd_fault
        self.relay_closed = relay_closed
        self.energy_wh = energy_wh


class Command:
    """What step() wants applied. step() returns the same object every call."""
    __slots__ = ("state", "duty", "relay", "fault", "current_a", "available_a", "source",
                 "session_active")

    def __init__(self):
        self.state = "A"
        self.duty = _DUTY_OFF
        self.relay = False
        self.fault = None
        self.current_a = 0
        self.available_a = 0
        self.source = "max"
        self.session_active = False


def _setting(name, v, lo, hi, num=False):
    ok = _is_num(v) if num else type(v) is int
    if not ok or v < lo or v > hi:
        raise ValueError("%s=%r outside %r..%r" % (name, v, lo, hi))
    return v


class Evse:
    def __init__(self, max_current_a, *, ventilation=False, fallback_current_a=6,
                 require_auth=False, rcd_retry_ms=900000, rcd_max_trips=3, debounce=2,
                 relay_check_ms=1000, relay_feedback=True, c1_timeout_ms=6000,
                 duty_interval_ms=5000, auth_timeout_ms=120000, session_log=8):
        self._max = _setting("max_current_a", max_current_a, 0, 80, True)
        self._fallback = _setting("fallback_current_a", fallback_current_a, 0, 80, True)
        self._rcd_retry = _setting("rcd_retry_ms", rcd_retry_ms, 0, 1 << 30)
        self._rcd_max = _setting("rcd_max_trips", rcd_max_trips, 1, 100)
        self._deb = _setting("debounce", debounce, 1, 10)
        self._relay_check = _setting("relay_check_ms", relay_check_ms, 1, 60000)
        self._c1 = _setting("c1_timeout_ms", c1_timeout_ms, 0, 6000)
        self._interval = _setting("duty_interval_ms", duty_interval_ms, 0, 600000)
        if auth_timeout_ms is not None:
            _setting("auth_timeout_ms", auth_timeout_ms, 1, 1 << 30)
        self._auth_to = auth_timeout_ms
        self._log_max = _setting("session_log", session_log, 1, 100)
        self._vent = bool(ventilation)
        self._need_auth = bool(require_auth)
        self._fb = bool(relay_feedback)
        self._cmd = Command()
        # clock: internal monotonic ms, advanced by the (non-negative) now_ms deltas
        self._last = None
        self._t = 0
        # CP
        self._st = _UNK
        self._cand = -1
        self._cnt = 0
        self._nc = 0
        self._dbad = 0
        self._diode_ok = False
        # PP
        self._pp_a = _PP_NONE
        self._pp_cand = -1
        self._pp_cnt = 0
        # faults (persisting bits; transient ones are recomputed every step)
        self._faults = 0
        self._allf = 0
        self._mm_t = None
        self._mm_cmd = False
        self._rcd_prev = False
        self._rcd_t = None
        self._trips = 0
        # pilot
        self._mode = _M_OFF
        self._duty = _DUTY_OFF
        self._offer_a = 0
        self._chg_t = None
        self._off_t = 0
        self._paused = False
        # limits: preallocated slots (name, amps, deadline)
        self._lim_n = [None] * _NLIM
        self._lim_a = [None] * _NLIM
        self._lim_dl = [None] * _NLIM
        # sessions
        self._sess = None  # [id, start_ms, tag, e_start, e_last, e_acc]
        self._sess_id = 0
        self._blocked = False
        self._auth = False
        self._auth_tag = None
        self._auth_dl = None
        self._done = []
        self.sessions_dropped = 0

    # -- control step ---------------------------------------------------------
    def step(self, now_ms, s):
        last = self._last
        if last is not None and now_ms > last:
            self._t += now_ms - last
        self._last = now_ms
        t = self._t
        c = self._cmd
        prev_relay = c.relay
        f = self._faults

        # contactor feedback: welded (commanded open) / stuck open (commanded closed)
        if self._fb:
            if bool(s.relay_closed) == prev_relay:
                self._mm_t = None
            elif self._mm_t is None or self._mm_cmd != prev_relay:
                self._mm_t = t
                self._mm_cmd = prev_relay
            elif t - self._mm_t >= self._relay_check:
                f |= _F_STUCK if prev_relay else _F_WELDED

        # RCD: every rising edge is a trip; re-close only after the retry delay
        tf = 0
        if s.rcd_fault:
            if not self._rcd_prev:
                self._trips += 1
                if self._trips >= self._rcd_max:
                    f |= _F_RCD_LATCH
            self._rcd_prev = True
            self._rcd_t = t
        else:
            self._rcd_prev = False
        if self._rcd_t is not None:
            if t - self._rcd_t < self._rcd_retry or s.rcd_fault:
                tf |= _F_RCD_TRIP
            else:
                self._rcd_t = None

        # CP high level, debounced (ignored while we drive -12 V ourselves)
        if self._mode == _M_F:
            self._cand = -1
            self._cnt = 0
            self._st = _UNK
            self._nc = self._deb
        else:
            mv = s.cp_high_mv
            if mv is None:
                r = _BAD
            elif mv >= _A_MIN:
                r = _A if mv <= _A_MAX else _BAD
            elif mv >= _B_MIN:
                r = _B
            elif mv >= _C_MIN:
                r = _C
            elif mv >= _D_MIN:
                r = _D
            elif mv >= _E_MIN:
                r = _E
            else:
                r = _BAD
            # samples in a row where the contactor may not be closed (any
            # mix of levels): the contactor opens after `debounce` of them
            if r == _C or (r == _D and self._vent):
                self._nc = 0
            elif self._nc < 100:
                self._nc += 1
            if r == self._cand:
                if self._cnt < 100:
                    self._cnt += 1
            else:
                self._cand = r
                self._cnt = 1
            if self._cnt >= self._deb and r != self._st:
                self._st = r
        st = self._st
        conn = _B <= st <= _D

        # vehicle diode: low level near -12 V while our PWM runs
        if self._mode == _M_PWM and conn:
            lo = s.cp_low_mv
            if lo is not None:
                if _LO_MIN <= lo <= _LO_MAX:
                    self._dbad = 0
                    self._diode_ok = True
                else:
                    self._dbad += 1
                    if self._dbad >= self._deb:
                        f |= _F_DIODE
        else:
            self._dbad = 0
            self._diode_ok = False

        # PP cable rating, debounced
        pp = s.pp_ohm
        if pp is None:
            r = _PP_NONE
        elif pp < 60 or pp > 4500:
            r = 0
        elif pp < 150:
            r = 63
        elif pp < 400:
            r = 32
        elif pp < 1000:
            r = 20
        else:
            r = 13
        if r == self._pp_cand:
            if self._pp_cnt < 100:
                self._pp_cnt += 1
        else:
            self._pp_cand = r
            self._pp_cnt = 1
        if self._pp_cnt >= self._deb:
            self._pp_a = r

        if st == _A:  # unplugged: the vehicle-bound faults and blocks end
            f &= ~_STICKY
            self._trips = 0
            self._blocked = False
            if self._sess is not None:
                self._end("ev_disconnected")
        if st >= _E and st != _UNK:
            tf |= _F_CP
        if st == _D and not self._vent:
            tf |= _F_VENT
        if conn and self._pp_a == 0:
            tf |= _F_PP
        self._faults = f
        allf = f | tf
        self._allf = allf

        # sessions
        sess = self._sess
        if self._auth and self._auth_dl is not None and t >= self._auth_dl:
            self._auth = False
            self._auth_tag = None
        if sess is not None:
            if f & _LATCHED:
                self._end(_fault_code(f & _LATCHED))
                sess = None
            else:
                e = s.energy_wh
                if e is not None:
                    if sess[3] is None:
                        sess[3] = e
                    elif e < sess[4]:  # meter restarted: keep what was counted
                        sess[5] += sess[4] - sess[3]
                        sess[3] = e
                    sess[4] = e
        elif conn and not self._blocked and not f & _LATCHED and (self._auth or not self._need_auth):
            self._start(s.energy_wh)
            sess = self._sess

        # available current: min(max, cable, limits); expired limits -> fallback
        av = self._max
        src = "max"
        pa = self._pp_a
        if conn and pa != 0 and pa != _PP_NONE and pa < av:
            av = pa
            src = "cable"
        la = self._lim_a
        ld = self._lim_dl
        for i in range(_NLIM):
            a = la[i]
            if a is None:
                continue
            dl = ld[i]
            if dl is not None and t >= dl:
                if self._fallback < av:
                    av = self._fallback
                    src = "fallback"
            elif a < av:
                av = a
                src = self._lim_n[i]

        # pilot: offer only with a session, not paused, no fault, in B/C(/D)
        mode = self._mode
        if f & _LATCHED:
            new = _M_F
        elif (sess is None or self._paused or allf or av < 6
              or not (st == _B or st == _C or (st == _D and self._vent))):
            new = _M_OFF
        else:
            new = _M_PWM
        ready = self._chg_t is None or t - self._chg_t >= self._interval
        if new != _M_PWM:
            if new != mode:  # stopping is immediate
                if mode == _M_PWM:
                    self._off_t = t
                self._mode = new
                self._duty = _DUTY_F if new == _M_F else _DUTY_OFF
                self._offer_a = 0
                self._chg_t = t
        elif mode != _M_PWM:
            if ready:  # starting waits for the 5 s spacing
                self._mode = _M_PWM
                self._duty = duty_for_current(av)
                self._offer_a = av
                self._chg_t = t
        elif av < self._offer_a or (av > self._offer_a and ready):
            # reductions are immediate (never offer more than is available),
            # increases wait for the 5 s spacing
            self._duty = duty_for_current(av)
            self._offer_a = av
            self._chg_t = t
        mode = self._mode

        # contactor
        relay = False
        if not allf and (st == _C or (st == _D and self._vent)) and self._nc < self._deb:
            if mode == _M_PWM:  # close on `debounce` samples in a row at this level
                relay = prev_relay or (self._diode_ok and self._cand == st and self._cnt >= self._deb)
            else:  # C1: let the vehicle ramp down, then open anyway
                relay = prev_relay and t - self._off_t < self._c1

        c.relay = relay
        c.duty = self._duty
        c.state = "F" if mode == _M_F else _LETTER[st]
        c.fault = _fault_code(allf)
        c.current_a = self._offer_a
        c.available_a = av
        c.source = src
        c.session_active = self._sess is not None
        return c

    # -- sessions -------------------------------------------------------------
    def _start(self, e):
        self._sess_id += 1
        tag = self._auth_tag
        self._auth = False
        self._auth_tag = None
        self._auth_dl = None
        self._sess = [self._sess_id, self._last, tag, e, e, 0]

    def _energy(self):
        x = self._sess
        if x[3] is None:
            return None
        return x[5] + x[4] - x[3]

    def _end(self, reason):
        x = self._sess
        rec = {"id": x[0], "start_ms": x[1], "stop_ms": self._last, "reason": reason,
               "energy_wh": self._energy(), "tag": x[2]}
        self._sess = None
        if len(self._done) >= self._log_max:
            self._done.pop(0)
            self.sessions_dropped += 1
        self._done.append(rec)

    @property
    def session(self):
        """The running session as a new dict, or None."""
        x = self._sess
        if x is None:
            return None
        return {"id": x[0], "start_ms": x[1], "tag": x[2], "energy_wh": self._energy(),
                "paused": self._paused}

    def pop_finished(self):
        """The oldest finished session record (dict), or None."""
        return self._done.pop(0) if self._done else None

    def authorize(self, tag=None):
        """Authorize charging (an RFID tag, an app user, ...). Starts a session
        at the next step() when a vehicle is connected; before plug-in it is
        kept for auth_timeout_ms. During a session it only sets a missing tag."""
        if tag is not None and type(tag) is not str:
            raise ValueError("tag must be a str or None, got %r" % (tag,))
        if self._sess is not None:
            if self._sess[2] is None:
                self._sess[2] = tag
            return
        self._auth = True
        self._auth_tag = tag
        self._auth_dl = None if self._auth_to is None else self._t + self._auth_to
        self._blocked = False

    def stop_session(self, reason="remote"):
        """End the running session now (record with `reason`); charging stops
        and no new session starts until unplug or authorize(). Returns whether
        a session was running."""
        if type(reason) is not str or not reason:
            raise ValueError("reason must be a non-empty str, got %r" % (reason,))
        if self._sess is None:
            return False
        self._end(reason)
        self._blocked = True
        return True

    def pause(self):
        """Stop offering current (steady +12 V); the session stays open."""
        self._paused = True

    def resume(self):
        self._paused = False

    @property
    def paused(self):
        return self._paused

    # -- limits and faults ------------------------------------------------------
    def set_limit(self, source, amps, ttl_ms=None):
        """Limit the offered current from `source` to `amps` (0..80, None
        clears). With ttl_ms the limit expires ttl_ms after the last now_ms
        seen by step(); an expired limit counts as fallback_current_a."""
        if type(source) is not str or not source or len(source) > 32 or source in _RESERVED:
            raise ValueError("bad limit source %r" % (source,))
        names = self._lim_n
        i = names.index(source) if source in names else -1
        if amps is None:
            if i >= 0:
                names[i] = None
                self._lim_a[i] = None
                self._lim_dl[i] = None
            return
        if not _is_num(amps) or amps < 0 or amps > 80:
            raise ValueError("limit %r A outside 0..80" % (amps,))
        if ttl_ms is not None and (type(ttl_ms) is not int or ttl_ms <= 0):
            raise ValueError("ttl_ms %r must be a positive int or None" % (ttl_ms,))
        if i < 0:
            if None not in names:
                raise ValueError("too many limit sources (max %d)" % _NLIM)
            i = names.index(None)
        names[i] = source
        self._lim_a[i] = amps
        self._lim_dl[i] = None if ttl_ms is None else self._t + ttl_ms

    def clear_faults(self):
        """Operator reset: clears latched and sticky faults, the RCD trip count
        and retry delay. A condition still present is detected again."""
        self._faults = 0
        self._trips = 0
        self._rcd_t = None
        self._rcd_prev = False
        self._dbad = 0

    def active_faults(self):
        """All fault codes active at the last step (a new tuple)."""
        return tuple(_CODES[i] for i in range(len(_CODES)) if self._allf & (1 << i))
