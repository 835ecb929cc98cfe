"""A real mosquitto configured only from what `evsectl credentials`
(tools/credentials.py) generates: TLS listener on loopback, password file,
ACL, optionally client certificates. Used by tests/test_broker_security.py.

    b = SecureBroker(tmpdir, devices=("cp-1", "cp-2"), client_certs=True).start()
    b.client("cp-2")          # a connected paho client with cp-2's credentials
    b.stop()
"""
import os
import shutil
import subprocess
import threading

from tools import credentials
from tools.netutil import free_port, wait_port


def find_mosquitto():
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    return None


class SecureBroker:
    def __init__(self, d, devices=("cp-1", "cp-2"), client_certs=False):
        self.dir = d
        self.exe = find_mosquitto()
        self.port = free_port()
        self.client_certs = client_certs
        self.devices = devices
        self.passwords = credentials.generate(d, list(devices), hosts=("localhost",), ips=("127.0.0.1",),
                                              client_certs=client_certs, port=self.port, bind="127.0.0.1")
        self.conf = os.path.join(d, "mosquitto.conf")
        with open(self.conf, "a") as f:      # test-only additions: run as us, log to the test dir
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                f.write("user root\n")
            f.write("persistence false\nlog_dest file %s\nlog_type all\n" % os.path.join(d, "mosquitto.log"))
        self.proc = None
        self._clients = []

    def start(self):
        self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_port(self.port):
            self.stop()
            raise RuntimeError("mosquitto did not start: %s" % self.log())
        return self

    def log(self):
        try:
            with open(os.path.join(self.dir, "mosquitto.log")) as f:
                return f.read()
        except OSError:
            return ""

    def path(self, name):
        return os.path.join(self.dir, name)

    def client(self, ident, password=None, ca=None, cert=True, client_id=None, timeout=10, cert_of=None):
        """A paho client logged in as `ident`; .rc is the CONNACK reason (0 = accepted),
        None when the TLS handshake or the connection failed. Messages land in .msgs."""
        import paho.mqtt.client as mqtt
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or ident + "-test",
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(ident, self.passwords.get(ident, "") if password is None else password)
        certfile = keyfile = None
        if self.client_certs and cert:
            who = cert_of or ident      # whose client certificate to present
            if who in self.devices:   # paho wants PEM: convert the board's DER pair
                certfile, keyfile = self._pem_pair(who)
            else:
                certfile, keyfile = self.path(who + ".crt.pem"), self.path(who + ".key.pem")
        c.tls_set(ca_certs=ca or self.path("ca.pem"), certfile=certfile, keyfile=keyfile)
        c.msgs = []
        c.lock = threading.Lock()
        c.rc = None
        c.connected = threading.Event()
        c.subacks = []

        def on_connect(cl, ud, flags, rc, props=None):
            cl.rc = rc.value if hasattr(rc, "value") else rc
            cl.connected.set()

        def on_message(cl, ud, msg):
            with cl.lock:
                cl.msgs.append((msg.topic, msg.payload))

        def on_subscribe(cl, ud, mid, rcs, props=None):
            cl.subacks.append([r.value if hasattr(r, "value") else r for r in rcs])

        c.on_connect = on_connect
        c.on_message = on_message
        c.on_subscribe = on_subscribe
        try:
            c.connect("127.0.0.1", self.port, keepalive=30)
        except OSError:   # ssl.SSLError included: refused during the handshake
            return c
        c.loop_start()
        self._clients.append(c)
        c.connected.wait(timeout)
        return c

    def _pem_pair(self, ident):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        out = []
        with open(self.path("devices/%s.crt.der" % ident), "rb") as f:
            cert = x509.load_der_x509_certificate(f.read())
        with open(self.path("devices/%s.key.der" % ident), "rb") as f:
            key = serialization.load_der_private_key(f.read(), None)
        for name, data in (("crt", cert.public_bytes(serialization.Encoding.PEM)),
                           ("key", key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))):
            p = self.path("devices/%s.%s.pem" % (ident, name))
            with open(p, "wb") as f:
                f.write(data)
            out.append(p)
        return out

    def stop(self):
        for c in self._clients:
            try:
                c.loop_stop()
                c.disconnect()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        self._clients = []
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
