"""Host side (CPython) of the MQTT tests: a real broker (mosquitto 2 where it
is installed, else the pinned amqtt), a stalled broker and a paho-mqtt
backend, all reachable from the device tests.

Which broker: `kind()`. EVSE_TEST_BROKER=mosquitto|amqtt forces one (auto,
the default, takes mosquitto when installed, else amqtt). Both get the same
setup (a plain listener with username/password, a TLS listener whose CA and
server certificate for 127.0.0.1/localhost come from `cryptography`), so the
same tests run on either; the run header names the broker (`describe()`).
A test that truly needs mosquitto (ACLs, TLS client certificates, the
broker's exact retained/will semantics) calls `require_mosquitto(what)`: it
fails, never skips, with the command that installs it. `make test` installs
mosquitto itself when it runs as root with apt.

`make(dirpath)` (the `# mptest: prep=tests.prep.broker:make` hook) starts, for
the whole pytest session (killed at exit with atexit):

- the broker on free loopback ports (plain + TLS);
- a "stalled broker": a TCP server that accepts connections and never reads;
- a "down" port: a free port nobody listens on;
- a control server (one JSON request per line, one JSON reply per line) that
  lets a device test stop/start the broker and drive a paho-mqtt backend
  that records every message under evse/# and homeassistant/# and publishes.

and writes everything the device tests need into <dirpath>/broker.json
(its "broker" field names the broker).

Control requests (device side: tests/device/test_mqtt_link.py):
    {"op": "ping"}                              -> {"ok": true}
    {"op": "stop"} / {"op": "start"}            -> {"ok": true}  (start waits for the backend)
    {"op": "pub", "topic": t, "payload": s, "retain": false}
    {"op": "msgs", "topic": t}                  -> {"ok": true, "msgs": [[payload, retain], ...]}
    {"op": "clear"}
"""
import atexit
import datetime
import hashlib
import base64
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

from tools.netutil import free_port, wait_port

USER = "evse"
PASSWORD = "s3cret-pw"
BACKEND_USER = "backend"
BACKEND_PASSWORD = "backend-pw"

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_procs = []
_AUTO = object()
_started = []  # kinds of the brokers started in this process (used())
_live = []  # keeps the servers of every make() call alive for the session


KINDS = ("mosquitto", "amqtt")
INSTALL_HINT = "apt-get install mosquitto (as root; `make test` does it itself when it can)"


def find_mosquitto():
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    return None


def find_amqtt():
    """The amqtt package of this interpreter (run by tests/prep/amqtt_broker.py), or None."""
    import importlib.util
    return "amqtt" if importlib.util.find_spec("amqtt") is not None else None


def kind(env=None, mosquitto=_AUTO):
    """The broker the tests use: EVSE_TEST_BROKER (mosquitto|amqtt) when set,
    else mosquitto when installed, else amqtt. Raises RuntimeError when the
    forced broker is not installed or the variable has another value."""
    env = os.environ if env is None else env
    exe = find_mosquitto() if mosquitto is _AUTO else mosquitto
    want = (env.get("EVSE_TEST_BROKER") or "auto").strip().lower()
    if want == "auto":
        return "mosquitto" if exe else "amqtt"
    if want not in KINDS:
        raise RuntimeError("EVSE_TEST_BROKER=%r: use mosquitto, amqtt or auto" % want)
    if want == "mosquitto" and not exe:
        raise RuntimeError("EVSE_TEST_BROKER=mosquitto but mosquitto is not installed: " + INSTALL_HINT)
    return want


def describe():
    """One line for the pytest header: which broker the MQTT tests run on."""
    try:
        k = kind()
    except RuntimeError as e:
        return "mqtt broker: %s" % e
    if k == "mosquitto":
        return "mqtt broker: mosquitto (%s)" % find_mosquitto()
    why = "forced by EVSE_TEST_BROKER" if os.environ.get("EVSE_TEST_BROKER") else "mosquitto not installed"
    return "mqtt broker: amqtt %s (%s; tests that need mosquitto fail: %s)" % (
        _amqtt_version(), why, INSTALL_HINT)


def _amqtt_version():
    try:
        from importlib.metadata import version
        return version("amqtt")
    except Exception:  # noqa: BLE001
        return "?"


def used():
    """The kinds of broker started by this process so far (for the run's summary)."""
    return list(_started)


def require_mosquitto(what):
    """For a test of `what` that only mosquitto does (ACLs, TLS client
    certificates, its exact retained/will semantics): the path of mosquitto,
    or an AssertionError naming the install command. Never a skip."""
    exe = find_mosquitto()
    if exe is None:
        raise AssertionError("%s needs mosquitto, which is not installed: %s" % (what, INSTALL_HINT))
    return exe


def _pw_line(user, password):
    # mosquitto's "$6$" format: base64(salt), base64(sha512(password + salt))
    salt = os.urandom(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "%s:$6$%s$%s\n" % (user, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def make_certs(d):
    """CA + server certificate for 127.0.0.1/localhost (EC P-256). Returns paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evse test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = {}
    for name, data in (
            ("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
            ("ca.der", ca.public_bytes(serialization.Encoding.DER)),
            ("server.pem", cert.public_bytes(serialization.Encoding.PEM)),
            ("server.key", key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()))):
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data)
        paths[name] = p
    # a CA that did not sign the server certificate (for the "wrong CA" test)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")])
    other = (x509.CertificateBuilder().subject_name(other_name).issuer_name(other_name)
             .public_key(other_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(other_key, hashes.SHA256()))
    p = os.path.join(d, "other_ca.pem")
    with open(p, "wb") as f:
        f.write(other.public_bytes(serialization.Encoding.PEM))
    paths["other_ca.pem"] = p
    return paths


class Broker:
    """The test broker on fixed ports (chosen once), restartable: mosquitto
    or amqtt (`kind`, default `kind()`), the same users, listeners and
    certificates on both."""

    def __init__(self, d, exe=None, kind=None):
        self.dir = d
        self.kind = kind or ("mosquitto" if exe else globals()["kind"]())
        if self.kind not in KINDS:
            raise ValueError("unknown broker kind %r" % (self.kind,))
        if self.kind == "mosquitto":
            self.exe = exe or find_mosquitto()
            if self.exe is None:
                raise RuntimeError("mosquitto is not installed: " + INSTALL_HINT)
        else:
            self.exe = exe or find_amqtt()
            if self.exe is None:
                raise RuntimeError("amqtt is not installed in this environment (make venv)")
        self.port = free_port()
        self.tls_port = free_port()
        self.certs = make_certs(d)
        self.pwfile = os.path.join(d, "passwd")
        self.log = os.path.join(d, "%s.log" % self.kind)
        if self.kind == "mosquitto":
            self.conf = self._mosquitto_conf()
        else:
            self.conf = self._amqtt_conf()
        self.proc = None

    def _mosquitto_conf(self):
        d = self.dir
        with open(self.pwfile, "w") as f:
            f.write(_pw_line(USER, PASSWORD))
            f.write(_pw_line(BACKEND_USER, BACKEND_PASSWORD))
        os.chmod(self.pwfile, 0o600)
        conf = os.path.join(d, "mosquitto.conf")
        with open(conf, "w") as f:
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                f.write("user root\n")  # else mosquitto drops to 'mosquitto' and cannot read our files
            f.write("per_listener_settings false\nallow_anonymous false\n"
                    "persistence false\npassword_file %s\n"
                    "log_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\n"
                    "listener %d 127.0.0.1\n"
                    "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                    % (self.pwfile, self.log, self.port, self.tls_port,
                       self.certs["ca.pem"], self.certs["server.pem"], self.certs["server.key"]))
        return conf

    def _amqtt_conf(self):
        # amqtt's FileAuthPlugin reads argon2 hashes (pwdlib); anonymous off
        from pwdlib import PasswordHash
        from pwdlib.hashers.argon2 import Argon2Hasher
        ph = PasswordHash((Argon2Hasher(),))
        with open(self.pwfile, "w") as f:
            f.write("%s:%s\n" % (USER, ph.hash(PASSWORD)))
            f.write("%s:%s\n" % (BACKEND_USER, ph.hash(BACKEND_PASSWORD)))
        os.chmod(self.pwfile, 0o600)
        conf = os.path.join(self.dir, "amqtt.yaml")
        with open(conf, "w") as f:
            f.write("listeners:\n"
                    "  default:\n    type: tcp\n    bind: 127.0.0.1:%d\n"
                    "  tls:\n    type: tcp\n    bind: 127.0.0.1:%d\n    ssl: true\n"
                    "    certfile: %s\n    keyfile: %s\n"
                    "plugins:\n"
                    "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: false\n"
                    "  amqtt.plugins.authentication.FileAuthPlugin:\n    password_file: %s\n"
                    % (self.port, self.tls_port, self.certs["server.pem"], self.certs["server.key"],
                       self.pwfile))
        return conf

    def start(self):
        if self.proc and self.proc.poll() is None:
            return
        if self.kind == "mosquitto":
            argv, out = [self.exe, "-c", self.conf], subprocess.DEVNULL   # it logs to self.log itself
        else:
            argv, out = [sys.executable, "-m", "tests.prep.amqtt_broker", self.conf], open(self.log, "a")
        try:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=_ROOT)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        _procs.append(self.proc)
        if self.kind not in _started:
            _started.append(self.kind)
        if not (wait_port(self.port) and wait_port(self.tls_port)):
            raise RuntimeError("%s did not start (see %s)" % (self.kind, self.log))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _listen(backlog, on_conn):
    """A loopback listener whose accepted connections go to on_conn(sock) in a
    daemon thread. Returns (listening socket, port)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)

    def run():
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            on_conn(c)
    threading.Thread(target=run, daemon=True).start()
    return sock, sock.getsockname()[1]


class Stalled:
    """Accepts TCP connections and never reads from them."""

    def __init__(self):
        self.held = []
        self.sock, self.port = _listen(16, self._hold)

    def _hold(self, c):
        self.held.append(c)
        del self.held[:-64]


class Backend:
    """paho-mqtt client recording everything under evse/# and homeassistant/# (QoS 1)."""

    def __init__(self, port):
        import paho.mqtt.client as mqtt
        self.port = port
        self.lock = threading.Lock()
        self.msgs = []
        self.subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="evse-test-backend")
        c.username_pw_set(BACKEND_USER, BACKEND_PASSWORD)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = self._on_message
        self.client = c
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        self.subscribed.wait(10)

    def _on_connect(self, client, userdata, flags, rc, props=None):
        client.subscribe([("evse/#", 1), ("homeassistant/#", 1)])

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.msgs.append((msg.topic, msg.payload.decode("utf-8", "replace"), bool(msg.retain)))

    def wait_ready(self, timeout=10):
        # paho's network thread reconnects by itself (delay 1-2 s) and resubscribes
        return self.subscribed.wait(timeout)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


class Control:
    def __init__(self, broker, backend):
        self.broker = broker
        self.backend = backend
        self.sock, self.port = _listen(
            4, lambda c: threading.Thread(target=self._serve, args=(c,), daemon=True).start())

    def _serve(self, c):
        f = c.makefile("rwb")
        try:
            for line in f:
                try:
                    rep = self.do(json.loads(line))
                except Exception as e:  # report to the device test, keep serving
                    rep = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
                f.write(json.dumps(rep).encode() + b"\n")
                f.flush()
        except OSError:
            pass
        finally:
            c.close()

    def do(self, req):
        op = req.get("op")
        if op == "ping":
            return {"ok": True}
        if op == "stop":
            self.backend.subscribed.clear()
            self.broker.stop()
            return {"ok": True}
        if op == "start":
            self.broker.start()
            return {"ok": self.backend.wait_ready()}
        if op == "pub":
            info = self.backend.client.publish(req["topic"], req["payload"], qos=1,
                                               retain=bool(req.get("retain")))
            info.wait_for_publish(5)
            return {"ok": info.is_published()}
        if op == "msgs":
            with self.backend.lock:
                got = [[p, r] for (t, p, r) in self.backend.msgs if t == req["topic"]]
            return {"ok": True, "msgs": got}
        if op == "clear":
            with self.backend.lock:
                del self.backend.msgs[:]
            return {"ok": True}
        return {"ok": False, "error": "unknown op %r" % (op,)}


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(_cleanup)


def make(dirpath):
    """Start everything and write <dirpath>/broker.json (see module doc)."""
    out = os.path.join(dirpath, "broker.json")
    info = {"error": None}
    try:
        broker = Broker(dirpath)
        broker.start()
        backend = Backend(broker.port)
        stalled = Stalled()
        control = Control(broker, backend)
        info.update({
            "broker": broker.kind,
            "host": "127.0.0.1", "port": broker.port, "tls_port": broker.tls_port,
            "user": USER, "password": PASSWORD,
            "ca": broker.certs["ca.pem"], "ca_der": broker.certs["ca.der"],
            "other_ca": broker.certs["other_ca.pem"],
            "stalled_port": stalled.port, "down_port": free_port(),
            "control_port": control.port,
        })
        _live.append((broker, backend, stalled, control))
    except Exception as e:  # noqa: BLE001 - reported to the device tests, which fail with it
        info["error"] = "broker prep failed: %s: %s" % (type(e).__name__, e)
    with open(out, "w") as f:
        json.dump(info, f)
    return info
