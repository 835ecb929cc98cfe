"""The MQTT tests' broker choice (tests/prep/broker.py): mosquitto where it is
installed, else the pinned amqtt, forced by EVSE_TEST_BROKER; never a skip.
The amqtt fallback really runs here (whatever is installed) with the same
users and TLS listener as mosquitto; the MQTT test modules themselves run on
either (EVSE_TEST_BROKER=amqtt)."""
import ssl
import threading

import pytest

from tests.prep import broker as B


def test_choice_follows_what_is_installed_and_the_variable():
    assert B.kind({}, mosquitto="/usr/sbin/mosquitto") == "mosquitto"
    assert B.kind({}, mosquitto=None) == "amqtt"                       # a fresh machine
    assert B.kind({"EVSE_TEST_BROKER": "amqtt"}, mosquitto="/usr/sbin/mosquitto") == "amqtt"
    assert B.kind({"EVSE_TEST_BROKER": "auto"}, mosquitto=None) == "amqtt"
    with pytest.raises(RuntimeError, match="apt-get install mosquitto"):
        B.kind({"EVSE_TEST_BROKER": "mosquitto"}, mosquitto=None)
    with pytest.raises(RuntimeError, match="use mosquitto, amqtt or auto"):
        B.kind({"EVSE_TEST_BROKER": "hivemq"}, mosquitto=None)


def test_mosquitto_only_tests_fail_with_the_command_never_skip(monkeypatch):
    monkeypatch.setattr(B, "find_mosquitto", lambda: None)
    with pytest.raises(AssertionError, match="ACL test needs mosquitto.*apt-get install mosquitto"):
        B.require_mosquitto("ACL test")
    monkeypatch.setenv("EVSE_TEST_BROKER", "")
    assert B.describe().startswith("mqtt broker: amqtt ")
    assert "apt-get install mosquitto" in B.describe()


def _connect(port, user, password, tls_ca=None):
    import paho.mqtt.client as mqtt
    got = threading.Event()
    res = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.username_pw_set(user, password)
    if tls_ca:
        c.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)

    def on_connect(cl, u, flags, rc, props=None):
        res["rc"] = rc
        got.set()
    c.on_connect = on_connect
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    try:
        assert got.wait(15), "no CONNACK"
    finally:
        c.loop_stop()
        c.disconnect()
    return not res["rc"].is_failure


def test_amqtt_fallback_has_the_same_users_and_tls(tmp_path):
    br = B.Broker(str(tmp_path), kind="amqtt")
    br.start()
    try:
        assert br.kind == "amqtt" and "amqtt" in B.used()
        assert _connect(br.port, B.USER, B.PASSWORD)
        assert _connect(br.port, B.BACKEND_USER, B.BACKEND_PASSWORD)
        assert not _connect(br.port, B.USER, "wrong")
        assert _connect(br.tls_port, B.USER, B.PASSWORD, tls_ca=br.certs["ca.pem"])
        br.stop()                                   # restartable on the same ports (link tests)
        br.start()
        assert _connect(br.port, B.USER, B.PASSWORD)
    finally:
        br.stop()
