# firmware/config.py: defaults, corrupt files, validation, atomic updates.
import os
import json
import mptest
from firmware.hal import simflash
from firmware import config

_dir = None


def setup():
    global _dir
    _dir = simflash.tmpdir("evse-cfg")


def teardown():
    simflash.rmtree(_dir)


def _write(data):
    with open(_dir + "/config.json", "wb") as f:
        f.write(data)


def _read():
    with open(_dir + "/config.json", "rb") as f:
        return f.read()


def test_defaults_without_file():
    cfg = config.load(_dir)
    mptest.eq(cfg, config.DEFAULTS)
    mptest.eq(config.last_error, None)
    cfg["mqtt"]["host"] = "changed"   # a copy: DEFAULTS stay intact
    mptest.eq(config.DEFAULTS["mqtt"]["host"], "127.0.0.1")


def test_corrupt_file_gives_defaults_and_error():
    for bad in (b"{not json", b"", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b'{"max_current_a": 16',
                b"\x00" * 64):
        _write(bad)
        cfg = config.load(_dir)
        mptest.eq(cfg, config.DEFAULTS, bad)
        mptest.true(config.last_error and "config.json" in config.last_error, bad, config.last_error)


def test_partial_file_merged_over_defaults():
    _write(json.dumps({"device_id": "cp-7", "mqtt": {"host": "10.0.0.2", "tls": True, "ca": "/ca.der"}}).encode())
    cfg = config.load(_dir)
    mptest.eq(config.last_error, None)
    mptest.eq(cfg["device_id"], "cp-7")
    mptest.eq(cfg["mqtt"]["host"], "10.0.0.2")
    mptest.eq(cfg["mqtt"]["tls"], True)
    mptest.eq(cfg["mqtt"]["port"], 1883)          # default kept inside the group
    mptest.eq(cfg["max_current_a"], 32)


def test_bad_values_in_file_fall_back_to_defaults():
    _write(json.dumps({"max_current_a": "lots", "ventilation": 1, "mqtt": {"port": 0, "host": "b"},
                       "telemetry_ms": 5000, "bogus": 1}).encode())
    cfg = config.load(_dir)
    mptest.eq(cfg["max_current_a"], 32)
    mptest.eq(cfg["ventilation"], False)
    mptest.eq(cfg["mqtt"]["port"], 1883)
    mptest.eq(cfg["mqtt"]["host"], "b")
    mptest.eq(cfg["telemetry_ms"], 5000)
    mptest.true("bogus" not in cfg)
    for k in ("max_current_a", "ventilation", "mqtt.port", "bogus"):
        mptest.true(k in config.last_error, k, config.last_error)


def test_file_breaking_cross_rule_takes_safe_side():
    _write(json.dumps({"max_current_a": 10, "fallback_current_a": 16,
                       "mqtt": {"tls": True, "password": "x"}}).encode())
    cfg = config.load(_dir)
    mptest.eq(cfg["fallback_current_a"], 10)
    mptest.eq(cfg["mqtt"]["tls"], False)
    mptest.eq(cfg["mqtt"]["password"], None)
    mptest.true(config.last_error is not None)


def test_validate_accepts_good_changes():
    for ch in ({"max_current_a": 16}, {"max_current_a": 16.5}, {"ventilation": True},
               {"install_window": [120, 300]}, {"install_window": None},
               {"mqtt": {"host": "broker.example", "port": 8883, "tls": True, "ca": "/ca.pem"}},
               {"mqtt": {"user": "u", "password": "p"}}, {"health": {"trial_s": 60}},
               {"telemetry_ms": 1000}, {"board": "rp2"}, {"device_id": "evse-12_a"}):
        mptest.eq(config.validate(ch), None, ch)


def test_validate_refuses_bad_changes_with_clear_text():
    cases = (
        ({"max_current_a": 81}, "max_current_a"),
        ({"max_current_a": 5}, "max_current_a"),
        ({"max_current_a": True}, "max_current_a"),
        ({"max_current_a": "16"}, "max_current_a"),
        ({"max_current_a": float("inf")}, "max_current_a"),
        ({"fallback_current_a": 40}, "fallback_current_a must not exceed"),
        ({"ventilation": 1}, "ventilation"),
        ({"telemetry_ms": 999}, "telemetry_ms"),
        ({"telemetry_ms": 1000.0}, "telemetry_ms"),
        ({"install_window": [0]}, "install_window"),
        ({"install_window": [0, 1440]}, "install_window"),
        ({"install_window": "night"}, "install_window"),
        ({"board": "stm32"}, "board"),
        ({"device_id": "a/b"}, "device_id"),
        ({"device_id": "+"}, "device_id"),
        ({"device_id": ""}, "device_id"),
        ({"mqtt": {"port": 70000}}, "mqtt.port"),
        ({"mqtt": {"tls": True}}, "mqtt.tls needs mqtt.ca"),
        ({"mqtt": {"password": "p"}}, "mqtt.password needs mqtt.user"),
        ({"mqtt": {"nope": 1}}, "unknown key: mqtt.nope"),
        ({"mqtt": "host"}, "mqtt must be an object"),
        ({"health": {"trial_s": -1}}, "health.trial_s"),
        ({"colour": "red"}, "unknown key: colour"),
        ({}, "no changes"),
        ([1], "must be an object"),
    )
    for ch, want in cases:
        err = config.validate(ch)
        mptest.true(err is not None and want in err, ch, err)


def test_update_persists_and_reloads():
    mptest.eq(config.update(_dir, {"max_current_a": 20, "mqtt": {"host": "10.1.1.1"}}), None)
    cfg = config.load(_dir)
    mptest.eq(cfg["max_current_a"], 20)
    mptest.eq(cfg["mqtt"]["host"], "10.1.1.1")
    mptest.eq(config.update(_dir, {"mqtt": {"port": 1884}}), None)
    cfg = config.load(_dir)
    mptest.eq(cfg["mqtt"]["host"], "10.1.1.1")   # earlier change kept
    mptest.eq(cfg["mqtt"]["port"], 1884)
    mptest.eq(sorted(os.listdir(_dir)), ["config.json"])   # no temp file left behind


def test_invalid_update_leaves_file_untouched():
    mptest.eq(config.update(_dir, {"max_current_a": 20}), None)
    before = _read()
    for ch in ({"max_current_a": 200}, {"max_current_a": 20, "bogus": 1}, {"fallback_current_a": 21},
               {"mqtt": {"port": "1883"}}, "text"):
        err = config.update(_dir, ch)
        mptest.true(err, ch)
        mptest.eq(_read(), before, ch)
    mptest.eq(sorted(os.listdir(_dir)), ["config.json"])


def test_invalid_update_without_file_creates_nothing():
    mptest.true(config.update(_dir, {"max_current_a": 1}))
    mptest.eq(os.listdir(_dir), [])


def test_update_checks_against_stored_values():
    mptest.eq(config.update(_dir, {"max_current_a": 10, "fallback_current_a": 6}), None)
    err = config.update(_dir, {"fallback_current_a": 12})   # fine against defaults, not against 10 A
    mptest.true(err and "fallback_current_a" in err, err)


def test_public_hides_password_only():
    cfg = config.load(_dir)
    cfg["mqtt"]["user"] = "u"
    cfg["mqtt"]["password"] = "secret"
    pub = config.public(cfg)
    mptest.eq(pub["mqtt"]["password"], config.REDACTED)
    mptest.eq(pub["mqtt"]["user"], "u")
    mptest.eq(cfg["mqtt"]["password"], "secret")   # original untouched
    mptest.true("secret" not in json.dumps(pub))
    cfg["mqtt"]["password"] = None
    mptest.eq(config.public(cfg)["mqtt"]["password"], None)
