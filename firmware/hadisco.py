# Home Assistant MQTT discovery: retained
# <prefix>/<component>/<node>/<object>/config messages that make the charger
# appear in Home Assistant with its sensors, a number for the current limit
# and buttons for pause/resume/authorize, all on our own evse/<id>/ topics
# (HA reads them through value templates; commands go to cmd/<name>).
#
# Heap: the configs are never held together. Each one is built from a short
# row of the table below when the link has room for it, handed to the link,
# and dropped: one per call of poll(), i.e. at most one per control period.
# They are (re)published after every (re)connect and when Home Assistant
# announces itself (birth message `online` on <prefix>/status).
# Topics and entities: docs/mqtt.md "Home Assistant discovery".

PREFIX = "homeassistant"

# Sensors: (object id, name, topic suffix, value: a payload field or a
# whole template, device_class, unit, state_class). Repeated short strings
# are interned once; templates use single quotes only (pasted into JSON).
_SENSORS = (
    ("state", "State", "state", "state", None, None, None),
    ("offered_current", "Offered current", "state", "current_a", "current", "A", "measurement"),
    ("current", "Current", "telemetry", "current_a", "current", "A", "measurement"),
    ("power", "Power", "telemetry", "power_w", "power", "W", "measurement"),
    ("voltage", "Voltage", "telemetry", "voltage_v", "voltage", "V", "measurement"),
    ("session_energy", "Session energy", "state",
     "{{ value_json.session.energy_wh if value_json.session else 0 }}", "energy", "Wh", None),
    ("energy", "Energy", "telemetry", "energy_wh", "energy", "Wh", "total_increasing"),
    ("temperature", "Temperature", "telemetry", "temperature_c", "temperature", "\u00b0C", "measurement"),
    ("fault", "Fault", "state", "{{ value_json.fault or 'none' }}", None, None, None),
    ("firmware_status", "Firmware status", "firmware", "status", None, None, None),
    ("firmware_version", "Firmware version", "status", "version", None, None, None),
)
# Buttons: (object id = our command, name, payload_press members after the id)
_BUTTONS = (
    ("pause", "Pause", ""),
    ("resume", "Resume", ""),
    ("authorize", "Authorize", ',\\"tag\\":null'),
)
_NS = len(_SENSORS)
_NB = len(_BUTTONS)
COUNT = _NS + 1 + _NB      # sensors, the current limit number, buttons


def node_id(device_id):
    # HA's node id allows [a-zA-Z0-9_-]; our device ids may also hold '.'
    return device_id.replace(".", "_")


def _jstr(s):
    # a JSON string literal for the few free texts (device id, version, board)
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Discovery:
    """Publishes the discovery configs through `link` (firmware.mqtt.Link):
    call poll() from the loop; birth(payload) on <prefix>/status."""

    def __init__(self, link, device_id, board="sim", version=None, slot=None, max_a=32,
                 prefix=PREFIX):
        self.link = link
        self.prefix = prefix
        self.node = node_id(device_id)
        self._base = "evse/" + device_id + "/"
        sw = version or "unknown"
        if slot:
            sw = "%s (slot %s)" % (sw, slot)
        # shared by every config: availability from our status topic, the device block
        self._tail = (',"availability":[{"topic":"%sstatus","value_template":'
                      '"{{ \'online\' if value_json.online else \'offline\' }}"}],'
                      '"device":{"identifiers":[%s],"name":%s,"manufacturer":"evse-agent",'
                      '"model":%s,"sw_version":%s}}'
                      % (self._base, _jstr("evse_" + self.node), _jstr("EV charger " + device_id),
                         _jstr("evse-agent " + board), _jstr(sw)))
        self._max = max_a if type(max_a) is int else int(max_a)
        self.next = 0          # index of the next config to publish; COUNT = all out
        self.rounds = 0        # complete rounds published (tests, status)
        self._ups = -1         # link connection seen last
        link.subscribe_extra(prefix + "/status", self.birth)

    def _row(self, i):
        # (component, object id) of entity i
        if i < _NS:
            return "sensor", _SENSORS[i][0]
        if i == _NS:
            return "number", "current_limit"
        return "button", _BUTTONS[i - _NS - 1][0]

    def topic(self, i):
        comp, obj = self._row(i)
        return "%s/%s/%s/%s/config" % (self.prefix, comp, self.node, obj)

    def payload(self, i):
        """The config JSON (str) of entity i (0 <= i < COUNT)."""
        b = self._base
        if i < _NS:
            obj, name, suffix, val, dc, unit, sc = _SENSORS[i]
        elif i == _NS:
            obj, name, suffix, val, dc, unit, sc = ("current_limit", "Current limit", "state",
                                                    "current_a", "current", "A", None)
        else:
            obj, name, more = _BUTTONS[i - _NS - 1]
            return ('{"name":"%s","unique_id":"%s_%s","command_topic":"%scmd/%s",'
                    '"payload_press":"{\\"id\\":\\"ha-%s\\"%s}"' % (name, self.node, obj, b, obj, obj, more)
                    + self._tail)
        if val[0] != "{":
            val = "{{ value_json.%s }}" % val
        s = ('{"name":"%s","unique_id":"%s_%s","state_topic":"%s%s","value_template":"%s"'
             % (name, self.node, obj, b, suffix, val))
        if dc:
            s += ',"device_class":"%s","unit_of_measurement":"%s"' % (dc, unit)
        if sc:
            s += ',"state_class":"%s"' % sc
        if i == _NS:
            s += (',"command_topic":"%scmd/set_limit","command_template":'
                  '"{\\"id\\":\\"ha-limit\\",\\"amps\\":{{ value }}}","min":0,"max":%d,"step":1,"mode":"box"'
                  % (b, self._max))
        return s + self._tail

    def birth(self, payload):
        # Home Assistant (re)started or reloaded its MQTT integration: publish
        # every config again, as HA asks of discoverable devices (a broker
        # restarted without persistence has lost the retained copies)
        if payload == b"online":
            self.next = 0

    def poll(self):
        link = self.link
        if not link.connected:
            return
        if link.ups != self._ups:
            self._ups = link.ups
            self.next = 0
        i = self.next
        if i >= COUNT:
            return
        if link.send_now(self.topic(i), self.payload(i), True):
            self.next = i + 1
            if i + 1 == COUNT:
                self.rounds += 1
