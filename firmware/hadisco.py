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

# (component, object id, name, topic suffix, value template, extra members).
# Templates use single quotes only: they are pasted into JSON strings.
_ENTITIES = (
    ("sensor", "state", "State", "state", "{{ value_json.state }}", ""),
    ("sensor", "offered_current", "Offered current", "state", "{{ value_json.current_a }}",
     ',"device_class":"current","unit_of_measurement":"A","state_class":"measurement"'),
    ("sensor", "current", "Current", "telemetry", "{{ value_json.current_a }}",
     ',"device_class":"current","unit_of_measurement":"A","state_class":"measurement"'),
    ("sensor", "power", "Power", "telemetry", "{{ value_json.power_w }}",
     ',"device_class":"power","unit_of_measurement":"W","state_class":"measurement"'),
    ("sensor", "voltage", "Voltage", "telemetry", "{{ value_json.voltage_v }}",
     ',"device_class":"voltage","unit_of_measurement":"V","state_class":"measurement"'),
    ("sensor", "session_energy", "Session energy", "state",
     "{{ value_json.session.energy_wh if value_json.session else 0 }}",
     ',"device_class":"energy","unit_of_measurement":"Wh"'),
    ("sensor", "energy", "Energy", "telemetry", "{{ value_json.energy_wh }}",
     ',"device_class":"energy","unit_of_measurement":"Wh","state_class":"total_increasing"'),
    ("sensor", "temperature", "Temperature", "telemetry", "{{ value_json.temperature_c }}",
     ',"device_class":"temperature","unit_of_measurement":"\u00b0C","state_class":"measurement"'),
    ("sensor", "fault", "Fault", "state", "{{ value_json.fault or 'none' }}", ""),
    ("sensor", "firmware_status", "Firmware status", "firmware", "{{ value_json.status }}", ""),
    ("sensor", "firmware_version", "Firmware version", "status", "{{ value_json.version }}", ""),
    ("number", "current_limit", "Current limit", "state", "{{ value_json.current_a }}",
     ',"command_topic":"%scmd/set_limit","command_template":"{\\"id\\":\\"ha-limit\\",\\"amps\\":{{ value }}}"'
     ',"min":0,"max":%s,"step":1,"mode":"box","device_class":"current","unit_of_measurement":"A"'),
    ("button", "pause", "Pause", None, None,
     ',"command_topic":"%scmd/pause","payload_press":"{\\"id\\":\\"ha-pause\\"}"'),
    ("button", "resume", "Resume", None, None,
     ',"command_topic":"%scmd/resume","payload_press":"{\\"id\\":\\"ha-resume\\"}"'),
    ("button", "authorize", "Authorize", None, None,
     ',"command_topic":"%scmd/authorize","payload_press":"{\\"id\\":\\"ha-authorize\\",\\"tag\\":null}"'),
)
COUNT = len(_ENTITIES)


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

    def topic(self, i):
        e = _ENTITIES[i]
        return "%s/%s/%s/%s/config" % (self.prefix, e[0], self.node, e[1])

    def payload(self, i):
        """The config JSON (str) of entity i."""
        comp, obj, name, suffix, tpl, extra = _ENTITIES[i]
        b = self._base
        s = '{"name":"%s","unique_id":"%s_%s"' % (name, self.node, obj)
        if suffix is not None:
            s += ',"state_topic":"%s%s","value_template":"%s"' % (b, suffix, tpl)
        if extra:
            if comp == "number":
                extra = extra % (b, self._max)
            elif comp == "button":
                extra = extra % b
            s += extra
        return s + self._tail

    def birth(self, payload):
        # Home Assistant (re)started: it has forgotten nothing retained, but
        # a broker without persistence may have; publish everything again
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
