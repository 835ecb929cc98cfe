# The `ocpp` section of /config.json (CONTRACT: url, charge_box_id, auth_key,
# ca) in firmware/config.py, and the OCPP-J framing of firmware/ocpp/rpc.py.
import json
import mptest
from firmware.hal import simflash
from firmware import config
from firmware.ocpp import rpc

_dir = None


def setup():
    global _dir
    _dir = simflash.tmpdir("evse-ocfg")


def teardown():
    simflash.rmtree(_dir)


def _install():
    simflash.rmtree(_dir)
    import os
    os.mkdir(_dir)
    mptest.eq(config.install(_dir, {"device_id": "cp-1", "board": "sim", "max_current_a": 16}), None)


def test_defaults_have_no_ocpp_link():
    _install()
    c = config.load(_dir)
    mptest.eq(c["ocpp"], {"url": None, "charge_box_id": None, "auth_key": None, "ca": None,
                          "signed_updates_only": False})


def test_valid_ocpp_settings_are_stored_by_the_installer():
    _install()
    mptest.eq(config.update(_dir, {"ocpp": {"url": "ws://10.0.0.2:9000/ocpp", "charge_box_id": "cp-1",
                                             "auth_key": "0123456789abcdef"},
                                    "mqtt": {"host": ""}}, installer=True), None)
    c = config.load(_dir)
    mptest.eq(c["ocpp"]["url"], "ws://10.0.0.2:9000/ocpp")
    mptest.eq(c["mqtt"]["host"], "")
    mptest.eq(config.public(c)["ocpp"]["auth_key"], config.REDACTED)
    mptest.eq(c["ocpp"]["auth_key"], "0123456789abcdef")


def test_signed_updates_only_is_an_installer_setting():
    _install()
    mptest.eq(config.update(_dir, {"ocpp": {"signed_updates_only": True}}, installer=True), None)
    mptest.eq(config.load(_dir)["ocpp"]["signed_updates_only"], True)
    before = config.load(_dir)
    # a remote command may not switch it off (an unsigned UpdateFirmware would pass)
    err = config.update(_dir, {"ocpp": {"signed_updates_only": False}})
    mptest.true(err is not None and err.startswith("installer setting: ocpp"), err)
    for bad in ("true", 1, None):
        err = config.update(_dir, {"ocpp": {"signed_updates_only": bad}}, installer=True)
        mptest.true(err is not None and err.startswith("ocpp.signed_updates_only must be true or false"),
                    bad, err)
    mptest.eq(config.load(_dir), before)


def test_a_remote_change_of_the_ocpp_endpoint_is_refused():
    _install()
    before = config.load(_dir)
    err = config.update(_dir, {"ocpp": {"url": "ws://evil.example/ocpp"}})
    mptest.true(err is not None and err.startswith("installer setting: ocpp"), err)
    mptest.eq(config.load(_dir), before)


def test_bad_ocpp_settings_are_refused_and_change_nothing():
    _install()
    before = config.load(_dir)
    for changes, words in (
            ({"ocpp": {"url": "http://x/ocpp"}}, "ocpp.url must be null or a ws://"),
            ({"ocpp": {"url": "wss://csms.example/ocpp"}}, "ocpp.url wss:// needs ocpp.ca"),
            ({"ocpp": {"charge_box_id": "cp/1"}}, "ocpp.charge_box_id may only hold"),
            ({"ocpp": {"auth_key": "short"}}, "ocpp.auth_key must be a string of 8..64"),
            ({"ocpp": {"bogus": 1}}, "unknown key: ocpp.bogus"),
            ({"ocpp": "ws://x"}, "ocpp must be an object")):
        err = config.update(_dir, changes, installer=True)
        mptest.true(err is not None and err.startswith(words), changes, err)
    mptest.eq(config.load(_dir), before)


def test_a_legacy_file_with_wss_but_no_ca_fails_closed():
    simflash.rmtree(_dir)
    import os
    os.mkdir(_dir)
    with open(_dir + "/config.json", "w") as f:
        json.dump({"device_id": "cp-1", "board": "sim", "max_current_a": 16,
                   "ocpp": {"url": "wss://csms.example/ocpp"}}, f)
    c = config.load(_dir)
    mptest.eq(c["max_current_a"], 0)
    mptest.eq(c["ocpp"]["url"], None)
    mptest.true(c.get("fault") and "no current offered" in c["fault"], c.get("fault"))


def test_rpc_framing_and_decoding():
    mptest.eq(json.loads(rpc.call("a-1", "Heartbeat", {})), [2, "a-1", "Heartbeat", {}])
    mptest.eq(json.loads(rpc.result("a-1", {"x": 1})), [3, "a-1", {"x": 1}])
    mptest.eq(json.loads(rpc.error("a-1", rpc.NOT_IMPLEMENTED, "no")), [4, "a-1", "NotImplemented", "no", {}])
    mptest.eq(rpc.decode('[2, "u", "Reset", {"type": "Hard"}]'), (2, "u", "Reset", {"type": "Hard"}))
    mptest.eq(rpc.decode('[3, "u", {}]'), (3, "u", {}, None))
    t, uid, a, e = rpc.decode('[2, "u", "Reset", 5]')
    mptest.eq((t, uid, a, e.code), (2, "u", "Reset", "FormatViolation"))
    for bad in ('nope', '{"a": 1}', '[9, "u", {}]', '[2, 5, "X", {}]'):
        mptest.raises(rpc.CallError, rpc.decode, bad)
    ids = set(rpc.new_id() for _ in range(50))
    mptest.eq(len(ids), 50)
