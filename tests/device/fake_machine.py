# A fake `machine` module for testing the HAL backends on the unix port.
# Install BEFORE importing a backend:
#     import sys, fake_machine
#     sys.modules["machine"] = fake_machine
# Every output call is appended to `calls` as a tuple, e.g.
#     ("PWM.duty_u16", 26, 34952)   ("Pin.value", 27, 1)   ("WDT.feed",)
# ADC readings are scripted per pin with script_adc(); digital inputs with
# set_input(). ADC reads are counted in `adc_reads` (not logged: bursts are long).

calls = []
adc_reads = {}
_adc = {}      # pin -> [values, index]
_inputs = {}   # pin -> level


class Reset(Exception):
    """machine.reset() was called (a real board would not return)."""


def clear():
    calls.clear()
    adc_reads.clear()
    _adc.clear()
    _inputs.clear()


def script_adc(pin, values):
    """Scripted read_u16 values for the ADC on `pin`, cycled forever."""
    if not values:
        raise ValueError("empty ADC script")
    _adc[pin] = [list(values), 0]


def set_input(pin, level):
    _inputs[pin] = 1 if level else 0


def find(name, pin=None):
    """The logged calls named `name` (on `pin` when given)."""
    return [c for c in calls if c[0] == name and (pin is None or (len(c) > 1 and c[1] == pin))]


def _id(p):
    return p.id if isinstance(p, Pin) else p


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self._v = 0 if value is None else (1 if value else 0)
        calls.append(("Pin", id, mode, pull, value))

    def value(self, v=None):
        if v is None:
            if self.mode == Pin.OUT:
                return self._v
            return _inputs.get(self.id, 0)
        self._v = 1 if v else 0
        calls.append(("Pin.value", self.id, self._v))

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    __call__ = value


class PWM:
    def __init__(self, pin, freq=None, duty_u16=None):
        self.pin = _id(pin)
        self._f = freq
        self._d = duty_u16
        calls.append(("PWM", self.pin, freq, duty_u16))

    def freq(self, f=None):
        if f is None:
            return self._f
        self._f = f
        calls.append(("PWM.freq", self.pin, f))

    def duty_u16(self, d=None):
        if d is None:
            return self._d
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 out of range")
        self._d = d
        calls.append(("PWM.duty_u16", self.pin, d))

    def deinit(self):
        calls.append(("PWM.deinit", self.pin))


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self.pin = _id(pin)
        calls.append(("ADC", self.pin, atten))

    def read_u16(self):
        s = _adc.get(self.pin)
        adc_reads[self.pin] = adc_reads.get(self.pin, 0) + 1
        if s is None:
            return 0
        vals, i = s
        s[1] = i + 1 if i + 1 < len(vals) else 0
        return vals[i]


class WDT:
    def __init__(self, id=0, timeout=5000):
        calls.append(("WDT", timeout))

    def feed(self):
        calls.append(("WDT.feed",))


def reset():
    calls.append(("reset",))
    raise Reset()


def soft_reset():
    calls.append(("soft_reset",))
    raise Reset()


def freq(f=None):
    return 240000000


def unique_id():
    return b"\xfa\x4e\x00\x01\x02\x03"
