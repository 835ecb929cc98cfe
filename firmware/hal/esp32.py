# ESP32 backend: the shared machine board with an ESP32 pin map.
# ADC channels are on ADC1 (GPIO 32-39): ADC2 is unusable while Wi-Fi runs.
import machine
from firmware.hal.machine_board import MachineBoard

PINS = {
    "cp_pwm": 26,     # LEDC PWM 1 kHz into the +-12 V CP driver
    "cp_adc": 36,     # SENSOR_VP, ADC1_CH0: CP divider output
    "pp_adc": 39,     # SENSOR_VN, ADC1_CH3: PP divider (None = tethered)
    "relay": 27,      # contactor coil driver
    "relay_fb": 33,   # auxiliary contact to GND (internal pull-up)
    "rcd_fault": 4,   # RDC-DD fault output
    "rcd_test": 13,   # RDC-DD test winding
    "ct_adc": 34,     # ADC1_CH6: current transformer (None = no meter)
    "temp_adc": 35,   # ADC1_CH7: NTC (None = chip sensor when available)
}


class Esp32Board(MachineBoard):
    def __init__(self, pins=None, meter=None, **calib):
        MachineBoard.__init__(self, machine, PINS, pins, meter, **calib)

    def _adc(self, pin):
        # 11 dB attenuation: ~0..3.1 V input range (non-linear above ~2.6 V;
        # calibrate cp_adc_mv_* on the board at +12 V and -12 V)
        return machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)

    def _internal_temp(self):
        try:
            import esp32
            return esp32.mcu_temperature()  # S2/S3/C3; classic ESP32 has none
        except (ImportError, AttributeError):
            return None
