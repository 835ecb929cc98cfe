# IEC 61851-1 charging core: control pilot (CP) states, PWM current offer,
# contactor (relay) rules, current limits, supervision (overcurrent,
# temperature), the power-on self-test and charging sessions.
#
# Pure logic: no I/O, no `machine`, no clock of its own. The agent calls
# step(now_ms, sense) once per control period (10-20 ms) and applies the
# returned Command. now_ms is a time.ticks_ms() value: it wraps at
# `ticks_period` (2**30 on MicroPython boards) and is only ever compared
# ticks_diff-style, so the core's arithmetic stays in the small-int range.
# step() allocates nothing on the steady path (a duty float is built only when
# the offered current changes). Rules, their sources, fault codes and session
# records: docs/charging.md.
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
_F_SELFTEST = const(4)
_F_RCD_TRIP = const(8)
_F_CP = const(16)
_F_DIODE = const(32)
_F_STUCK = const(64)
_F_OC = const(128)
_F_TEMP = const(256)
_F_PP = const(512)
_F_VENT = const(1024)
_LATCHED = const(7)  # welded | rcd_latched | selftest: only a local clear; pilot F
_STICKY = const(224)  # diode | stuck | overcurrent: until unplug or clear_faults()
_CODES = ("relay_welded", "rcd_latched", "selftest_failed", "rcd_trip", "cp_error",
          "diode_missing", "relay_stuck_open", "overcurrent", "over_temperature",
          "pp_invalid", "ventilation_required")

# pilot output modes
_M_OFF = const(0)  # steady +12 V (X1)
_M_PWM = const(1)  # X2
_M_F = const(2)  # steady -12 V
_M_PROBE = const(3)  # latched F: a short +12 V look for the vehicle leaving

_F_MIN_MS = const(300)  # F after a fault stop (IEC 61851-1 table A.5)
_PROBE_MS = const(1000)  # latched F: look for an unplug this often
_TEMP_HYST = const(5)  # degrees C below a temperature threshold to clear it

# power-on self-test phases
_ST_DONE = const(0)
_ST_NEG = const(1)  # CP generator: steady -12 V reads negative
_ST_POS = const(2)  # CP generator: steady +12 V reads in A..D
_ST_RCD_IDLE = const(3)  # RCD input healthy before the test
_ST_RCD_ON = const(4)  # test winding on: the input must trip
_ST_RCD_OFF = const(5)  # test winding off: the input must recover
_ST_FAILED = const(6)
_ST_TIMEOUT = (0, 500, 500, 1000, 1000, 2000)
_ST_REASON = (None, "cp_negative", "cp_positive", "rcd_input", "rcd_no_trip", "rcd_stuck")

_DUTY_OFF = 100.0
_DUTY_F = 0.0
_NLIM = const(8)
_RESERVED = ("max", "cable", "fallback", "temperature")
_EXPIRED = const(-1)
# indexes into Evse._k (the settings)
_K_C1 = const(0)
_K_FB = const(1)
_K_HOLDOFF = const(2)
_K_INTERVAL = const(3)
_K_LOG_MAX = const(4)
_K_MAX = const(5)
_K_NEED_AUTH = const(6)
_K_OC_MS = const(7)
_K_RCD_MAX = const(8)
_K_RCD_RETRY = const(9)
_K_RCD_ST = const(10)
_K_RELAY_CHECK = const(11)
_K_T_DERATE = const(12)
_K_T_DERATE_CLR = const(13)
_K_T_STOP = const(14)
_K_T_STOP_CLR = const(15)
_K_FALLBACK = const(16)
_K_DERATE_A = const(17)
_K_AUTH_TO = const(18)
_K_VENT = const(19)


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

    6..51 A: amps / 0.6; 52.5..80 A: amps / 2.5 + 64; between 51 and 52.5 A
    the duty of 51 A (85 %: the vehicle could not read more); below 6 A:
    100.0 (no PWM, steady +12 V: nothing may be offered). ValueError outside
    0..80 A.
    """
    if not _is_num(amps) or amps < 0 or amps > 80:
        raise ValueError("current %r A outside 0..80" % (amps,))
    if amps < 6:
        return _DUTY_OFF
    if amps < 52.5:
        if amps > 51:
            amps = 51
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


def pp_rating(ohm):
    """Cable rating (A) of a PP resistance per IEC 61851-1 table B.2, 0 for an
    invalid value (below 60 or above 4500 ohm), None for None (tethered).
    Between two bands the lower rating."""
    if ohm is None:
        return None
    if ohm < 60 or ohm > 4500:
        return 0
    if ohm <= 140:
        return 63
    if ohm <= 308:  # 141..163 (between bands): the lower rating
        return 32
    if ohm <= 936:  # 309..399: the lower rating
        return 20
    return 13  # 937..1099: the lower rating


class Sense:
    """Readings of one control period. The agent keeps one and updates it.
    current_a: measured current (A, highest phase), None without a meter;
    temperature_c: board/socket temperature, None without a sensor."""
    __slots__ = ("cp_high_mv", "cp_low_mv", "pp_ohm", "rcd_fault", "relay_closed", "energy_wh",
                 "current_a", "temperature_c")

    def __init__(self, cp_high_mv=None, cp_low_mv=None, pp_ohm=None, rcd_fault=False,
                 relay_closed=False, energy_wh=None, current_a=None, temperature_c=None):
        self.cp_high_mv = cp_high_mv
        self.cp_low_mv = cp_low_mv
        self.pp_ohm = pp_ohm
        self.rcd_fault = rcd_fault
        self.relay_closed = relay_closed
        self.energy_wh = energy_wh
        self.current_a = current_a
        self.temperature_c = temperature_c


class Command:
    """What step() wants applied. step() returns the same object every call.
    rcd_test: drive the RCD test winding (power-on self-test)."""
    __slots__ = ("state", "duty", "relay", "fault", "current_a", "available_a", "source",
                 "session_active", "rcd_test", "ev_connected")

    def __init__(self):
        self.state = "A"
        self.duty = _DUTY_OFF
        self.relay = False
        self.fault = None
        self.current_a = 0
        self.available_a = 0
        self.source = "max"
        self.session_active = False
        self.rcd_test = False
        self.ev_connected = False


def _setting(name, v, lo, hi, num=False):
    ok = _is_num(v) if num else type(v) is int
    if not ok or v < lo or v > hi:
        raise ValueError("%s=%r outside %r..%r" % (name, v, lo, hi))
    return v


def _opt_setting(name, v, lo, hi, num=False):
    return None if v is None else _setting(name, v, lo, hi, num)


class Evse:
    def __init__(self, max_current_a, *, ventilation=False, fallback_current_a=6,
                 require_auth=False, rcd_retry_ms=900000, rcd_max_trips=3, debounce=2,
                 relay_check_ms=1000, relay_feedback=True, c1_timeout_ms=6000,
                 duty_interval_ms=5000, auth_timeout_ms=120000, session_log=8,
                 period_ms=20, ticks_period=1 << 30, relay_holdoff_ms=3000,
                 overcurrent_ms=7000, temp_derate_c=70, temp_stop_c=85, temp_derate_a=None,
                 session_max_wh=None, session_max_ms=None, selftest=False, rcd_selftest=True):
        p = ticks_period
        if type(p) is not int or p < (1 << 24) or p & (p - 1):
            raise ValueError("ticks_period=%r must be a power of two >= 2**24" % (p,))
        self._mask = p - 1
        half = p >> 1
        self._half = half
        k_max = _setting("max_current_a", max_current_a, 0, 80, True)
        k_fallback = _setting("fallback_current_a", fallback_current_a, 0, 80, True)
        k_rcd_retry = _setting("rcd_retry_ms", rcd_retry_ms, 0, half - 1)
        k_rcd_max = _setting("rcd_max_trips", rcd_max_trips, 1, 100)
        self._deb = _setting("debounce", debounce, 1, 10)
        _setting("period_ms", period_ms, 1, 100)
        if debounce * period_ms > 100:
            raise ValueError("debounce=%d at period_ms=%d opens the contactor after %d ms, "
                             "over the 100 ms of IEC 61851-1" % (debounce, period_ms,
                                                                 debounce * period_ms))
        k_relay_check = _setting("relay_check_ms", relay_check_ms, 1, 60000)
        k_c1 = _setting("c1_timeout_ms", c1_timeout_ms, 3000, 6000)
        k_interval = _setting("duty_interval_ms", duty_interval_ms, 5000, 600000)
        k_auth_to = _opt_setting("auth_timeout_ms", auth_timeout_ms, 1, half - 1)
        k_log_max = _setting("session_log", session_log, 1, 100)
        k_holdoff = _setting("relay_holdoff_ms", relay_holdoff_ms, 0, 60000)
        k_oc_ms = _setting("overcurrent_ms", overcurrent_ms, 1000, 60000)
        k_t_derate = _setting("temp_derate_c", temp_derate_c, 0, 150, True)
        k_t_stop = _setting("temp_stop_c", temp_stop_c, temp_derate_c + _TEMP_HYST, 150, True)
        k_t_stop_clr = temp_stop_c - _TEMP_HYST
        k_t_derate_clr = temp_derate_c - _TEMP_HYST
        if temp_derate_a is None:
            temp_derate_a = max(6, max_current_a // 2)
        k_derate_a = _setting("temp_derate_a", temp_derate_a, 0, 80, True)
        self._s_wh0 = _opt_setting("session_max_wh", session_max_wh, 1, 10 ** 6, True)
        self._s_ms0 = _opt_setting("session_max_ms", session_max_ms, 1000, half - 1)
        k_vent = bool(ventilation)
        k_need_auth = bool(require_auth)
        k_fb = bool(relay_feedback)
        k_rcd_st = bool(rcd_selftest)
        # settings: one tuple (fewer instance attributes, smaller instance dict)
        self._k = (k_c1, k_fb, k_holdoff, k_interval, k_log_max, k_max, k_need_auth, k_oc_ms, k_rcd_max, k_rcd_retry, k_rcd_st, k_relay_check, k_t_derate, k_t_derate_clr, k_t_stop, k_t_stop_clr, k_fallback, k_derate_a, k_auth_to, k_vent)
        self._cmd = Command()
        # clock: internal ticks (same period), advanced by forward now_ms steps
        self._last = None
        self._t = 0
        # CP
        self._st = _UNK
        self._cand = -1
        self._cnt = 0
        self._nc = 0
        self._dbad = 0
        self._diode_ok = False
        self._conn = False
        # PP
        self._pp_a = _PP_NONE
        self._pp_cand = -1
        self._pp_cnt = 0
        # faults (persisting bits; transient ones are recomputed every step)
        self._faults = 0
        self._allf = 0
        self._mm_t = None
        self._mm_cmd = False
        self._mm_hit = False
        self._closed_once = False  # a close was commanded since power-up
        self._wcnt = 0
        self._rcd_prev = False
        self._rcd_t = None
        self._trips = 0
        self._oc_t = None
        self._oc_lim = 0.55
        self._hot = 0  # 0 normal, 1 derating, 2 over temperature
        self._tcnt = 0
        # self-test
        self._stp = _ST_NEG if selftest else _ST_DONE
        self._st_t = None
        self._st_n = 0
        self.selftest_reason = None
        # pilot
        self._mode = _M_OFF
        self._duty = _DUTY_OFF
        self._offer_a = 0
        self._chg_t = None
        self._off_t = None
        self._f_t = None
        self._f_why = 0
        self._probe_n = 0
        self._paused = False
        # contactor
        self._open_t = None
        self.relay_cycles = 0
        # limits: preallocated slots (name, amps, set time, ttl, hard)
        self._lim_n = [None] * _NLIM
        self._lim_a = [None] * _NLIM
        self._lim_t = [None] * _NLIM
        self._lim_ttl = [0] * _NLIM
        self._lim_h = [False] * _NLIM
        # sessions
        self._sess = None  # [id, start_ms, tag, e_start, e_last, e_acc, ms, e_stop]
        self._sess_id = 0
        self._s_wh = self._s_wh0
        self._s_ms = self._s_ms0
        self._blocked = False
        self._auth = False
        self._auth_tag = None
        self._auth_t = None
        self._done = []
        self.sessions_dropped = 0

    # -- control step ---------------------------------------------------------
    def step(self, now_ms, s):
        m = self._mask
        last = self._last
        d = 0
        if last is not None:
            d = (now_ms - last) & m
            if d >= self._half:  # backwards (or a gap over half the period): no time
                d = 0
        self._last = now_ms
        if d:
            x = (self._t - m) + (d - 1)  # (t + d) mod period, in small ints
            if x < 0:
                x += m
                x += 1
            self._t = x
        t = self._t
        c = self._cmd
        prev_relay = c.relay
        f = self._faults
        deb = self._deb
        k = self._k

        # contactor feedback: closed before any close command = welded at once;
        # else disagreeing with the command for relay_check_ms
        if k[_K_FB]:
            rc = bool(s.relay_closed)
            if not self._closed_once:
                if rc:
                    self._wcnt += 1
                    if self._wcnt >= deb:
                        f |= _F_WELDED
                else:
                    self._wcnt = 0
            if rc == prev_relay:
                self._mm_t = None
                self._mm_hit = False
            elif self._mm_t is None or self._mm_cmd != prev_relay:
                self._mm_t = t
                self._mm_cmd = prev_relay
                self._mm_hit = False
            elif self._mm_hit or (t - self._mm_t) & m >= k[_K_RELAY_CHECK]:
                self._mm_hit = True
                f |= _F_STUCK if prev_relay else _F_WELDED

        if self._stp != _ST_DONE and self._stp != _ST_FAILED:
            self._faults = f
            if f & _F_WELDED:
                self._fail_selftest("relay_welded")
                self._rcd_prev = bool(s.rcd_fault)
            elif self._selftest(t, s, c):
                return c
            f = self._faults  # ended in this step: the normal rules from here

        # RCD: every rising edge is a trip; re-close only after the retry delay
        tf = 0
        if s.rcd_fault:
            if not self._rcd_prev:
                self._trips += 1
                if self._trips >= k[_K_RCD_MAX]:
                    f |= _F_RCD_LATCH
            self._rcd_prev = True
            self._rcd_t = t
        else:
            self._rcd_prev = False
        if self._rcd_t is not None:
            if s.rcd_fault or (t - self._rcd_t) & m < k[_K_RCD_RETRY]:
                tf |= _F_RCD_TRIP
            else:
                self._rcd_t = None

        # CP high level, debounced (ignored while we drive -12 V ourselves and
        # in the first sample of a probe, which still reads our -12 V)
        mode = self._mode
        if mode == _M_F or (mode == _M_PROBE and self._probe_n == 0):
            self._cand = -1
            self._cnt = 0
            self._st = _UNK
            self._nc = deb
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
            if r == _C or (r == _D and k[_K_VENT]):
                self._nc = 0
            elif self._nc < 100:
                self._nc += 1
            if r == self._cand:
                if self._cnt < 100:
                    self._cnt += 1
            else:
                self._cand = r
                self._cnt = 1
            if self._cnt >= deb and r != self._st:
                self._st = r
        st = self._st
        conn = _B <= st <= _D
        if st != _UNK:
            self._conn = conn

        # vehicle diode: low level near -12 V while our PWM runs
        if mode == _M_PWM and conn:
            lo = s.cp_low_mv
            if lo is not None:
                if _LO_MIN <= lo <= _LO_MAX:
                    self._dbad = 0
                    self._diode_ok = True
                else:
                    self._dbad += 1
                    if self._dbad >= deb:
                        f |= _F_DIODE
        else:
            self._dbad = 0
            self._diode_ok = False

        # PP cable rating (IEC 61851-1 table B.2), debounced
        r = pp_rating(s.pp_ohm)
        if r is None:
            r = _PP_NONE
        if r == self._pp_cand:
            if self._pp_cnt < 100:
                self._pp_cnt += 1
        else:
            self._pp_cand = r
            self._pp_cnt = 1
        if self._pp_cnt >= deb:
            self._pp_a = r

        # overcurrent: measured above (offered + 0.5 A) * 1.1 for overcurrent_ms
        # while the contactor is closed (EVerest's rule)
        ia = s.current_a
        if prev_relay and ia is not None and ia > self._oc_lim:
            if self._oc_t is None:
                self._oc_t = t
            elif (t - self._oc_t) & m >= k[_K_OC_MS]:
                f |= _F_OC
        else:
            self._oc_t = None

        # temperature: derate above temp_derate_c, stop above temp_stop_c,
        # each cleared 5 degrees below its threshold (debounced)
        tc = s.temperature_c
        if tc is not None:
            h = self._hot
            if tc >= k[_K_T_STOP] or (h == 2 and tc >= k[_K_T_STOP_CLR]):
                lvl = 2
            elif tc >= k[_K_T_DERATE] or (h and tc >= k[_K_T_DERATE_CLR]):
                lvl = 1
            else:
                lvl = 0
            if lvl == h:
                self._tcnt = 0
            else:
                self._tcnt += 1
                if self._tcnt >= deb:
                    self._hot = lvl
                    self._tcnt = 0
        if self._hot == 2:
            tf |= _F_TEMP

        if st == _A:  # unplugged: the vehicle-bound faults and blocks end
            f &= ~_STICKY
            self._trips = 0
            self._blocked = False
            if self._sess is not None:
                self._end("ev_disconnected")
        if st >= _E and st != _UNK:
            tf |= _F_CP
        if st == _D and not k[_K_VENT]:
            tf |= _F_VENT
        if conn and self._pp_a == 0:
            tf |= _F_PP
        self._faults = f
        allf = f | tf

        # sessions
        sess = self._sess
        if self._auth_t is not None and (t - self._auth_t) & m >= k[_K_AUTH_TO]:
            self._auth = False
            self._auth_tag = None
            self._auth_t = None
        if sess is not None:
            if f & _LATCHED:
                self._end(_fault_code(f & _LATCHED))
                sess = None
            else:
                e = s.energy_wh
                if e is not None:
                    if sess[3] is None:
                        sess[3] = e
                        self._e_stop(sess)
                    elif e < sess[4]:  # meter restarted: keep what was counted
                        sess[5] += sess[4] - sess[3]
                        sess[3] = e
                        self._e_stop(sess)
                    sess[4] = e
                    if sess[7] is not None and e >= sess[7]:
                        self._end("energy_limit")
                        self._blocked = True
                        sess = None
                if sess is not None:
                    if sess[6] < self._half:
                        sess[6] += d
                    if self._s_ms is not None and sess[6] >= self._s_ms:
                        self._end("duration_limit")
                        self._blocked = True
                        sess = None
        elif conn and not self._blocked and not f & _LATCHED and (self._auth or not k[_K_NEED_AUTH]):
            self._start(s.energy_wh)
            sess = self._sess

        # available current: min(max, cable, limits, temperature); expired
        # limits -> fallback. hard: the part that must hold at once.
        av = k[_K_MAX]
        src = "max"
        pa = self._pp_a
        if conn and pa != 0 and pa != _PP_NONE and pa < av:
            av = pa
            src = "cable"
        hard = av
        la = self._lim_a
        lt = self._lim_t
        for i in range(_NLIM):
            a = la[i]
            if a is None:
                continue
            st0 = lt[i]
            if st0 is not None and st0 != _EXPIRED and (t - st0) & m >= self._lim_ttl[i]:
                lt[i] = st0 = _EXPIRED
            if st0 == _EXPIRED:
                if k[_K_FALLBACK] < av:
                    av = k[_K_FALLBACK]
                    src = "fallback"
            else:
                if a < av:
                    av = a
                    src = self._lim_n[i]
                if self._lim_h[i] and a < hard:
                    hard = a
        if self._hot and k[_K_DERATE_A] < av:
            av = k[_K_DERATE_A]
            src = "temperature"
        tgt = av
        if 51 < tgt < 52.5:  # the vehicle cannot read more than 51 A here
            tgt = 51

        # pilot: offer only with a session, not paused, no fault, in B/C(/D)
        ready = self._chg_t is None or (t - self._chg_t) & m >= k[_K_INTERVAL]
        if ready:
            self._chg_t = None
        if f & _LATCHED:
            new = _M_F
        elif allf and (mode == _M_PWM or prev_relay):
            new = _M_F  # fault stop: F first
            self._f_t = t
            self._f_why = allf
        elif mode == _M_F and self._f_t is not None and (t - self._f_t) & m < _F_MIN_MS:
            new = _M_F
        elif (sess is None or self._paused or allf or av < 6
              or not (st == _B or st == _C or (st == _D and k[_K_VENT]))):
            new = _M_OFF
        else:
            new = _M_PWM
        if new == _M_F and f & _LATCHED and (mode == _M_F or mode == _M_PROBE):
            # latched: keep F, with a short +12 V look for an unplug every second
            if mode == _M_F:
                if self._f_t is None:
                    self._f_t = t
                elif (t - self._f_t) & m >= _PROBE_MS:
                    new = _M_PROBE
                    self._probe_n = 0
            else:
                self._probe_n += 1
                if self._probe_n <= deb:
                    new = _M_PROBE
                else:
                    self._f_t = t
        if new != _M_PWM:
            if new != mode:  # stopping is immediate
                if mode == _M_PWM:
                    self._off_t = t
                if new == _M_F and mode != _M_PROBE:
                    self._f_t = t
                self._mode = new
                self._duty = _DUTY_F if new == _M_F else _DUTY_OFF
                if self._offer_a:
                    self._set_offer(0)
                if mode == _M_PWM:
                    self._chg_t = t
        elif mode != _M_PWM:
            if ready:  # starting waits for the 5 s spacing
                self._mode = _M_PWM
                self._duty = duty_for_current(tgt)
                self._set_offer(tgt)
                self._chg_t = t
        elif tgt != self._offer_a:
            if hard < self._offer_a:  # must hold at once: stop, restart later
                self._mode = _M_OFF
                self._off_t = t
                self._duty = _DUTY_OFF
                self._set_offer(0)
                self._chg_t = t
            elif ready:  # one change per duty_interval_ms, reductions included
                self._duty = duty_for_current(tgt)
                self._set_offer(tgt)
                self._chg_t = t
        mode = self._mode
        rep = allf
        if mode == _M_F:  # keep reporting what stopped us while the CP is not read
            rep |= self._f_why
        else:
            self._f_why = 0
        self._allf = rep
        if self._off_t is not None and (t - self._off_t) & m >= k[_K_C1]:
            self._off_t = None

        # contactor
        relay = False
        if not allf and (st == _C or (st == _D and k[_K_VENT])) and self._nc < deb:
            if mode == _M_PWM:  # close on `debounce` samples in a row at this level
                relay = prev_relay or (self._diode_ok and self._cand == st and self._cnt >= deb
                                       and self._open_t is None)
            else:  # C1: let the vehicle ramp down, then open anyway
                relay = prev_relay and self._off_t is not None
        if relay != prev_relay:
            if relay:
                self.relay_cycles += 1
                self._closed_once = True
            else:
                self._open_t = t
        if self._open_t is not None and (t - self._open_t) & m >= k[_K_HOLDOFF]:
            self._open_t = None

        c.relay = relay
        c.duty = self._duty
        c.state = "F" if (mode == _M_F or f & _LATCHED) else _LETTER[st]
        c.fault = _fault_code(rep)
        c.current_a = self._offer_a
        c.available_a = av
        c.source = src
        c.session_active = self._sess is not None
        c.rcd_test = False
        c.ev_connected = self._conn
        return c

    def _set_offer(self, a):
        self._offer_a = a
        self._oc_lim = (a + 0.5) * 1.1

    # -- power-on self-test ------------------------------------------------------
    def _selftest(self, t, s, c):
        # one phase per condition; each must hold `debounce` samples in a row
        # (the first sample of a phase still shows the previous output) within
        # its timeout. The contactor stays open and no session starts.
        p = self._stp
        if self._st_t is None:
            self._st_t = t
            self._st_n = 0
            ok = False
            first = True
        else:
            first = False
            if p == _ST_NEG:
                mv = s.cp_high_mv
                ok = mv is not None and mv < _E_MIN
            elif p == _ST_POS:
                mv = s.cp_high_mv
                ok = mv is not None and _D_MIN <= mv <= _A_MAX
            elif p == _ST_RCD_ON:
                ok = bool(s.rcd_fault)
            else:
                ok = not s.rcd_fault
        if ok:
            self._st_n += 1
            if self._st_n >= self._deb:
                p += 1
                if p == _ST_FAILED or (p == _ST_RCD_IDLE and not self._k[_K_RCD_ST]):
                    p = _ST_DONE
                self._stp = p
                self._st_t = t
                self._st_n = 0
                if p == _ST_DONE:
                    self._rcd_prev = bool(s.rcd_fault)
                    return False
        else:
            self._st_n = 0
            if not first and (t - self._st_t) & self._mask >= _ST_TIMEOUT[p]:
                self._fail_selftest(_ST_REASON[p])
                self._rcd_prev = bool(s.rcd_fault)  # no trip counted for the test
                return False
        c.relay = False
        c.duty = _DUTY_F if p == _ST_NEG else _DUTY_OFF
        c.state = "F" if p == _ST_NEG else "A"
        c.fault = None
        c.current_a = 0
        c.available_a = 0
        c.source = "max"
        c.session_active = False
        c.rcd_test = p == _ST_RCD_ON
        c.ev_connected = self._conn
        return True

    def _fail_selftest(self, reason):
        self._stp = _ST_FAILED
        self._st_t = None
        self.selftest_reason = reason
        self._faults |= _F_SELFTEST

    @property
    def selftest(self):
        """Power-on self-test: None while it runs, 'ok' when passed (or
        disabled), else the reason it failed (relay_welded, cp_negative,
        cp_positive, rcd_input, rcd_no_trip, rcd_stuck)."""
        p = self._stp
        if p == _ST_DONE:
            return "ok"
        if p == _ST_FAILED:
            return self.selftest_reason
        return None

    # -- sessions -------------------------------------------------------------
    def _start(self, e):
        self._sess_id += 1
        tag = self._auth_tag
        self._auth = False
        self._auth_tag = None
        self._auth_t = None
        self._s_wh = self._s_wh0
        self._s_ms = self._s_ms0
        self._sess = [self._sess_id, self._last, tag, e, e, 0, 0, None]
        if e is not None:
            self._e_stop(self._sess)

    def _e_stop(self, x):
        # the meter reading at which the energy limit is reached
        x[7] = None if self._s_wh is None or x[3] is None else x[3] + self._s_wh - x[5]

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
        if len(self._done) >= self._k[_K_LOG_MAX]:
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
                "paused": self._paused, "duration_ms": x[6]}

    def pop_finished(self):
        """The oldest finished session record (dict), or None."""
        return self._done.pop(0) if self._done else None

    def set_session_limits(self, energy_wh=None, duration_ms=None):
        """Maximum energy (Wh) and duration (ms) of the running session (or of
        the next one when none runs); None = no limit. Reaching one ends the
        session (reason energy_limit / duration_limit) like stop_session().
        The next session starts with the installer's session_max_* again."""
        _opt_setting("energy_wh", energy_wh, 1, 10 ** 6, True)
        _opt_setting("duration_ms", duration_ms, 1000, self._half - 1)
        self._s_wh = energy_wh
        self._s_ms = duration_ms
        x = self._sess
        if x is not None:
            self._e_stop(x)
        else:
            self._s_wh0 = energy_wh
            self._s_ms0 = duration_ms

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
        self._auth_t = None if self._k[_K_AUTH_TO] is None else self._t
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

    # installer settings: constructor only, read-only here
    @property
    def max_current_a(self):
        return self._k[_K_MAX]

    @property
    def ventilation(self):
        return self._k[_K_VENT]

    # -- limits and faults ------------------------------------------------------
    def set_limit(self, source, amps, ttl_ms=None, hard=False):
        """Limit the offered current from `source` to `amps` (0..80, None
        clears); never above max_current_a. With ttl_ms the limit expires
        ttl_ms after the last now_ms seen by step(); an expired limit counts as
        fallback_current_a. hard=True: the limit must hold at once, so a
        reduction below the running offer stops the PWM instead of waiting for
        the 5 s duty spacing."""
        if type(source) is not str or not source or len(source) > 32 or source in _RESERVED:
            raise ValueError("bad limit source %r" % (source,))
        names = self._lim_n
        i = names.index(source) if source in names else -1
        if amps is None:
            if i >= 0:
                names[i] = None
                self._lim_a[i] = None
                self._lim_t[i] = None
                self._lim_h[i] = False
            return
        if not _is_num(amps) or amps < 0 or amps > 80:
            raise ValueError("limit %r A outside 0..80" % (amps,))
        if ttl_ms is not None and (type(ttl_ms) is not int or ttl_ms <= 0 or ttl_ms >= self._half):
            raise ValueError("ttl_ms %r must be None or an int 1..%d" % (ttl_ms, self._half - 1))
        if i < 0:
            if None not in names:
                raise ValueError("too many limit sources (max %d)" % _NLIM)
            i = names.index(None)
        names[i] = source
        self._lim_a[i] = amps
        self._lim_t[i] = None if ttl_ms is None else self._t
        self._lim_ttl[i] = 0 if ttl_ms is None else ttl_ms
        self._lim_h[i] = bool(hard)

    def clear_faults(self, local=True):
        """Reset faults. local=True (default): the installer's / service
        console's reset: clears latched (relay_welded, rcd_latched,
        selftest_failed: the self-test runs again) and sticky faults, the RCD
        trip count and retry delay. local=False: what remote commands (MQTT,
        OCPP) call: clears the sticky faults (diode_missing, relay_stuck_open,
        overcurrent) and a pending RCD retry; latched faults and the RCD trip
        count stay (repeated remote clears cannot keep the RCD from latching). A condition still present is detected
        again. Returns the latched fault codes left (a tuple)."""
        if not local:
            self._faults &= _LATCHED
            self._f_why &= _LATCHED
            if not self._rcd_prev:  # a retry delay ends; an input still set stays
                self._rcd_t = None
            self._dbad = 0
            self._oc_t = None
            return tuple(_CODES[i] for i in range(3) if self._faults & (1 << i))
        if self._stp == _ST_FAILED:
            self._stp = _ST_NEG
            self._st_t = None
            self.selftest_reason = None
        self._faults = 0
        self._f_why = 0
        self._trips = 0
        self._rcd_t = None
        self._rcd_prev = False
        self._dbad = 0
        self._oc_t = None
        self._wcnt = 0
        return ()

    def active_faults(self):
        """All fault codes active at the last step (a new tuple)."""
        return tuple(_CODES[i] for i in range(len(_CODES)) if self._allf & (1 << i))
