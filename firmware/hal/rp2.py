# RP2040 backend: the shared machine board with a Raspberry Pi Pico pin map.
# The RP2040 has ADC0-2 on GP26-28 and the on-chip temperature sensor on ADC4.
import machine
from firmware.hal.machine_board import MachineBoard

PINS = {
    "cp_pwm": 16,     # PWM slice 0 A, 1 kHz into the +-12 V CP driver
    "cp_adc": 26,     # ADC0: CP divider output
    "pp_adc": 27,     # ADC1: PP divider (None = tethered)
    "relay": 15,      # contactor coil driver
    "relay_fb": 14,   # auxiliary contact to GND (internal pull-up)
    "rcd_fault": 13,  # RDC-DD fault output
    "rcd_test": 12,   # RDC-DD test winding
    "ct_adc": 28,     # ADC2: current transformer (None = no meter)
    "temp_adc": None,  # None = on-chip sensor (ADC4)
}

_WDT_MAX_MS = 8388   # RP2040 watchdog limit


class Rp2Board(MachineBoard):
    def __init__(self, pins=None, meter=None, **calib):
        MachineBoard.__init__(self, machine, PINS, pins, meter, **calib)
        self._chip_temp = None

    def _internal_temp(self):
        if self._chip_temp is None:
            self._chip_temp = machine.ADC(4)
        v = self._chip_temp.read_u16() * 3.3 / 65535
        return 27 - (v - 0.706) / 0.001721   # RP2040 datasheet 4.9.5

    def _wdt_max_ms(self):
        return _WDT_MAX_MS
