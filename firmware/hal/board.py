# Board interface of the charger: the contract every backend keeps.
# (Comments, not docstrings: docstrings cost RAM on the unix port.)
# Small on purpose: the simulator imports check_duty from here; the shared
# implementation for boards driven through `machine` is machine_board.py.
from micropython import const

PP_OPEN = const(1000000)  # pp_read() value for an open PP line (no cable in a socket)


class Board:
    # The board interface. Every backend implements all of these.
    #
    # Times are virtual on the simulator and time.ticks_ms() on boards; compare
    # them with time.ticks_diff, never by subtraction.

    def ticks_ms(self):
        # Monotonic milliseconds (wraps like time.ticks_ms).
        raise NotImplementedError

    def cp_output(self, duty):
        # CP output: 100.0 = steady +12 V, 0.0 = steady -12 V, else 1 kHz PWM
        # with `duty` percent. Bad duty: TypeError/ValueError, output unchanged.
        raise NotImplementedError

    def cp_read(self):
        # (high_mv, low_mv or None): CP levels; low is None while no PWM runs.
        raise NotImplementedError

    def pp_read(self):
        # PP resistance in ohms, PP_OPEN for an open line, None when tethered.
        raise NotImplementedError

    def relay(self, closed):
        # Drive the contactor coil.
        raise NotImplementedError

    def relay_feedback(self):
        # True when the auxiliary contact reports the contactor closed.
        raise NotImplementedError

    def rcd_fault(self):
        # True while the RCD / RDC-DD reports a residual-current fault.
        raise NotImplementedError

    def rcd_test(self, on):
        # Drive the RCD / RDC-DD test winding.
        raise NotImplementedError

    def meter(self):
        # (voltage_v, current_a, energy_wh): mean phase voltage L-N, mean
        # current per active phase, total energy over all phases.
        raise NotImplementedError

    def temperature_c(self):
        # Board temperature in degrees C, or None when there is no sensor.
        raise NotImplementedError

    def wdt_start(self, timeout_ms):
        raise NotImplementedError

    def wdt_feed(self):
        raise NotImplementedError

    def reset(self):
        # Hard reset of the board (does not return).
        raise NotImplementedError

    def sense_into(self, s):
        # Fill s.cp_high_mv, cp_low_mv, pp_ohm, rcd_fault, relay_closed,
        # energy_wh in place, without allocating. Called every control period.
        raise NotImplementedError


def check_duty(duty):
    # Validate a CP duty in percent; returns it as a float.
    if type(duty) is bool or not isinstance(duty, (int, float)):
        raise TypeError("cp duty must be a number, got %r" % (duty,))
    if not 0 <= duty <= 100:  # also rejects nan
        raise ValueError("cp duty %r outside 0..100 %%" % (duty,))
    return float(duty)
