# mptest: heapsize=96K
# firmware/config.py: protected copies on a real LittleFS, fail closed on any
# corruption, installer vs operator settings, validation, atomic updates.
import os
import json
import mptest
from firmware.hal import simflash
from firmware import config

_MNT = "/t_cfg"
_dir = None
_dev = None
_BASE = {"device_id": "cp-7", "board": "sim", "max_current_a": 16, "fallback_current_a": 6,
         "require_auth": True, "mqtt": {"host": "10.0.0.2", "user": "u", "password": "pw"}}


_tmp = None


def _mount(img=None, fresh=False):
    global _dev
    _dev = simflash.FileBlockDevice(img or _tmp + "/flash.img", 512, 64, create=fresh)
    if fresh:
        simflash.mkfs(_dev)
    simflash.mount(_dev, _MNT, mtime=False)


def _unmount():
    simflash.umount(_MNT)
    _dev.close()


def setup():
    global _dir, _tmp
    _tmp = simflash.tmpdir("evse-cfg")
    _mount(fresh=True)
    _dir = _MNT


def teardown():
    _unmount()
    simflash.rmtree(_tmp)


def _write(name, data):
    with open(_dir + "/" + name, "wb") as f:
        f.write(data)


def _read(name=config.FILE):
    try:
        with open(_dir + "/" + name, "rb") as f:
            return f.read()
    except OSError:
        return None


def _both():
    return _read(config.FILE), _read(config.COPY)


def _failsafe(cfg, why=None):
    mptest.true(cfg.get("fault"), "not failsafe", cfg)
    mptest.eq(cfg["max_current_a"], 0, cfg)
    mptest.eq(cfg["fallback_current_a"], 0)
    mptest.eq(cfg["require_auth"], True)
    mptest.eq(cfg["device_id"], None)
    mptest.eq(cfg["mqtt"]["host"], None)
    mptest.eq(config.fault, cfg["fault"])
    if why:
        mptest.true(why in cfg["fault"], why, cfg["fault"])


def test_missing_config_fails_closed_not_defaults():
    cfg = config.load(_dir)
    _failsafe(cfg, "no config.json")
    mptest.true(cfg["max_current_a"] != config.DEFAULTS["max_current_a"])


def test_install_writes_two_protected_copies_readable_as_json():
    mptest.eq(config.install(_dir, _BASE), None)
    a, b = _both()
    mptest.eq(a, b)
    d = json.loads(a)                      # still plain JSON: the CONTRACT sections stay readable
    mptest.eq(d["max_current_a"], 16)
    mptest.true("_crc" in d and "_seq" in d)
    cfg = config.load(_dir)
    mptest.eq((cfg.get("fault"), config.last_error), (None, None))
    mptest.eq(cfg["device_id"], "cp-7")
    mptest.eq(cfg["mqtt"]["port"], 1883)   # the template fills what the installer left out
    mptest.true("_seq" not in cfg and "_crc" not in cfg)
    names = sorted(os.listdir(_dir))
    mptest.eq(names, ["config.bak", "config.json"])   # no temp file left


def test_install_refuses_incomplete_or_bad_config():
    for cfg in ({"board": "sim", "max_current_a": 16}, {"device_id": "x", "board": "sim"},
                dict(_BASE, max_current_a=90), "text"):
        mptest.true(config.install(_dir, cfg), cfg)
        mptest.eq(_both(), (None, None), cfg)


def test_corruption_of_both_copies_fails_closed():
    mptest.eq(config.install(_dir, _BASE), None)
    good = _read()
    i = good.find(b'"max_current_a": 16')
    mptest.true(i > 0)
    j = i + len(b'"max_current_a": ')
    flips = []
    for new in (b"3", b"9"):                               # '16' -> '36', '96' (one bit each)
        flips.append(good[:j] + new + good[j + 1:])
    bad = [b"", good[:len(good) // 2], good[:-1], b"\x00" * len(good), b"\xff" * 64] + flips
    bad.append(bytes([good[0]]) + bytes([good[1] ^ 0x01]) + good[2:])
    for data in bad:
        _write(config.FILE, data)
        _write(config.COPY, data)
        _failsafe(config.load(_dir))
    os.remove(_dir + "/" + config.FILE)
    os.remove(_dir + "/" + config.COPY)
    _failsafe(config.load(_dir), "no config.json")


def test_every_bit_flip_of_one_byte_range_is_caught():
    mptest.eq(config.install(_dir, _BASE), None)
    good = _read()
    n = len(good)
    for pos in (0, 5, n // 2, n - 12, n - 3):   # body, value, checksum digits, closing brace
        for bit in range(8):
            b = bytearray(good)
            b[pos] ^= 1 << bit
            _write(config.FILE, b)
            _write(config.COPY, b)
            cfg = config.load(_dir)
            mptest.true(cfg.get("fault"), pos, bit, bytes(b))


def test_one_bad_copy_falls_back_to_the_other_and_says_so():
    mptest.eq(config.install(_dir, _BASE), None)
    good = _read()
    for name, other in ((config.FILE, config.COPY), (config.COPY, config.FILE)):
        _write(name, good.replace(b"16", b"36"))
        cfg = config.load(_dir)
        mptest.eq((cfg.get("fault"), cfg["max_current_a"]), (None, 16), name)
        mptest.true(name in config.last_error and "checksum" in config.last_error, config.last_error)
        _write(name, good)


def test_newest_valid_copy_wins_and_sequence_wraps():
    cfg = config.merge(config.DEFAULTS, _BASE)
    for s_file, s_copy, want in ((5, 4, 16), (4, 5, 20), (0x3FFFFFFF, 0, 20), (0, 0x3FFFFFFF, 16),
                                 (7, 7, 16)):
        _write(config.FILE, config.encode(cfg, s_file))
        _write(config.COPY, config.encode(config.merge(cfg, {"max_current_a": 20}), s_copy))
        mptest.eq(config.load(_dir)["max_current_a"], want, s_file, s_copy)


def test_update_after_half_written_pair_continues_from_newest():
    mptest.eq(config.install(_dir, _BASE), None)
    mptest.eq(config.update(_dir, {"telemetry_ms": 5000}), None)
    newest = _read()
    mptest.eq(config.update(_dir, {"telemetry_ms": 6000}), None)
    _write(config.FILE, newest)          # as if the cut fell between the two copies
    mptest.eq(config.load(_dir)["telemetry_ms"], 6000)
    mptest.eq(config.update(_dir, {"telemetry_ms": 7000}), None)
    a, b = _both()
    mptest.eq(a, b)
    mptest.eq(config.load(_dir)["telemetry_ms"], 7000)


def test_power_cut_at_every_write_of_an_update_leaves_old_or_new():
    mptest.eq(config.install(_dir, _BASE), None)
    _unmount()
    base, work = _tmp + "/flash.img", _tmp + "/work.img"
    buf = bytearray(1024)
    simflash.copy_file(base, work, buf)
    _mount(work)
    w0 = _dev.writes
    mptest.eq(config.update(_dir, {"telemetry_ms": 5000}), None)
    total = _dev.writes - w0
    _unmount()
    seen = {}
    for n in range(1, total + 1):
        for torn in (0, 32):
            simflash.copy_file(base, work, buf)
            _mount(work)
            _dev.cut_after(n, torn)
            try:
                config.update(_dir, {"telemetry_ms": 5000})
            except Exception:
                if not _dev.dead:
                    raise
            mptest.true(_dev.dead, "cut", n, "not reached")
            _unmount()
            _mount(work)
            cfg = config.load(_dir)
            mptest.eq(cfg.get("fault"), None, "cut", n, torn)
            mptest.true(cfg["telemetry_ms"] in (10000, 5000), n)
            mptest.eq(cfg["max_current_a"], 16)
            seen[cfg["telemetry_ms"]] = 1
            _unmount()
    print("config power cuts: %d cut points x 2, outcomes %s" % (total, sorted(seen)))
    mptest.eq(sorted(seen), [5000, 10000])
    mptest.true(total >= 4, total)
    _mount(base)


def test_legacy_plain_file_accepted_once_when_strictly_valid():
    _write(config.FILE, json.dumps(_BASE).encode())
    cfg = config.load(_dir)
    mptest.eq((cfg.get("fault"), cfg["max_current_a"]), (None, 16))
    mptest.true("legacy" in config.last_error, config.last_error)
    a, b = _both()
    mptest.eq(a, b)
    mptest.true(b'"_crc"' in a)              # rewritten protected
    config.load(_dir)
    mptest.eq(config.last_error, None)


def test_legacy_plain_file_with_any_doubt_fails_closed():
    for d in (dict(_BASE, max_current_a=96), dict(_BASE, bogus=1), {"max_current_a": 16, "board": "sim"},
              dict(_BASE, mqtt={"port": 0}), dict(_BASE, _seq=3), dict(_BASE, fallback_current_a=20)):
        _write(config.FILE, json.dumps(d).encode())
        _failsafe(config.load(_dir))
        mptest.eq(_read(config.COPY), None)      # nothing rewritten
    _write(config.FILE, json.dumps(_BASE).encode())
    _write(config.COPY, b"garbage")              # a protected install never goes back to legacy
    _failsafe(config.load(_dir))


def test_remote_update_refuses_installer_settings_and_changes_nothing():
    mptest.eq(config.install(_dir, _BASE), None)
    before = _both()
    for ch in ({"max_current_a": 80}, {"max_current_a": 10}, {"ventilation": True}, {"board": "esp32"},
               {"device_id": "x"}, {"mqtt": {"host": "evil.example"}}, {"mqtt": {"ca": "/x.pem"}},
               {"mqtt": {"password": "p2"}}, {"health": {"trial_s": 10}}, {"health": {"need_mqtt": False}},
               {"ocpp": {"url": "ws://evil"}}, {"telemetry_ms": 5000, "max_current_a": 80}):
        err = config.update(_dir, ch)
        mptest.true(err and "installer setting" in err, ch, err)
        mptest.eq(_both(), before, ch)
    err = config.update(_dir, {"require_auth": False})
    mptest.true(err and "require_auth" in err, err)
    mptest.eq(_both(), before)
    err = config.update(_dir, {"fallback_current_a": 20})   # above the 16 A rating
    mptest.true(err and "fallback_current_a" in err, err)
    mptest.eq(_both(), before)


def test_remote_update_of_operator_settings():
    mptest.eq(config.install(_dir, dict(_BASE, require_auth=False)), None)
    mptest.eq(config.update(_dir, {"require_auth": True, "telemetry_ms": 5000,
                                   "install_window": [60, 120], "fallback_current_a": 10}), None)
    cfg = config.load(_dir)
    mptest.eq((cfg["require_auth"], cfg["telemetry_ms"], cfg["install_window"], cfg["fallback_current_a"]),
              (True, 5000, [60, 120], 10))
    mptest.eq(cfg["mqtt"]["password"], "pw")      # untouched fields kept
    mptest.eq(config.update(_dir, {"max_current_a": 20}, installer=True), None)   # service console
    mptest.eq(config.load(_dir)["max_current_a"], 20)


def test_update_without_valid_config_is_refused_and_writes_nothing():
    for ch in ({"telemetry_ms": 5000}, {"max_current_a": 16}):
        err = config.update(_dir, ch, installer=True)
        mptest.true(err and "no valid configuration" in err, err)
    mptest.eq(os.listdir(_dir), [])


def test_validate_accepts_good_changes():
    for ch in ({"max_current_a": 16}, {"max_current_a": 16.5}, {"ventilation": True},
               {"install_window": [120, 300]}, {"install_window": None},
               {"mqtt": {"host": "broker.example", "port": 8883, "tls": True, "ca": "/ca.pem"}},
               {"mqtt": {"user": "u", "password": "p"}}, {"health": {"trial_s": 60}},
               {"mqtt": {"tls": True, "ca": "/ca.der", "cert": "/c.der", "key": "/k.der"}},
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
        ({"mqtt": {"cert": "/c.der"}}, "mqtt.cert and mqtt.key go together"),
        ({"mqtt": {"cert": "/c.der", "key": "/k.der"}}, "mqtt.cert needs mqtt.tls"),
        ({"mqtt": "host"}, "mqtt must be an object"),
        ({"health": {"trial_s": -1}}, "health.trial_s"),
        ({"colour": "red"}, "unknown key: colour"),
        ({"fault": "x"}, "unknown key: fault"),
        ({}, "no changes"),
        ([1], "must be an object"),
    )
    for ch, want in cases:
        err = config.validate(ch)
        mptest.true(err is not None and want in err, ch, err)


def test_public_hides_password_only():
    mptest.eq(config.install(_dir, _BASE), None)
    cfg = config.load(_dir)
    pub = config.public(cfg)
    mptest.eq(pub["mqtt"]["password"], config.REDACTED)
    mptest.eq(pub["mqtt"]["user"], "u")
    mptest.eq(cfg["mqtt"]["password"], "pw")   # original untouched
    mptest.true('"pw"' not in json.dumps(pub))
    cfg["mqtt"]["password"] = None
    mptest.eq(config.public(cfg)["mqtt"]["password"], None)
