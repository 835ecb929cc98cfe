"""Host tools that point a board at a CSMS (CONTRACT): `evsectl vboard --ocpp URL`
(new and existing flash) and `evsectl deploy --ocpp URL --ocpp-auth-key K`
(the config it writes, checked by firmware/config.py's rules)."""
from tools import deploy, provision
from tools.vboard import VBoard


def test_vboard_ocpp_writes_a_new_flash_and_merges_into_an_existing_one(tmp_path):
    d = str(tmp_path / "vbx")
    (tmp_path / "vbx").mkdir()
    VBoard(d, id="vbx", ocpp="ws://127.0.0.1:9000/ocpp", config={"max_current_a": 16})._prepare_flash()
    cfg = provision.update_config(d + "/flash.img", {"telemetry_ms": 10000})
    assert cfg["ocpp"]["url"] == "ws://127.0.0.1:9000/ocpp"
    assert cfg["mqtt"]["host"] == "" and cfg["max_current_a"] == 16   # OCPP only: MQTT off
    VBoard(d, id="vbx", ocpp="ws://10.0.0.1:80/cs")._prepare_flash()
    cfg = provision.update_config(d + "/flash.img", {"telemetry_ms": 10000})
    assert cfg["ocpp"]["url"] == "ws://10.0.0.1:80/cs" and cfg["max_current_a"] == 16


def test_deploy_ocpp_options_build_a_valid_config_and_bad_ones_are_refused():
    cfg = deploy.build_config({"device_id": "old", "mqtt": {"host": "a"}}, None, "cp-7", "sim",
                              ocpp_url="wss://csms.example:443/ocpp", ocpp_auth_key="0123456789abcdef")
    assert cfg["ocpp"] == {"url": "wss://csms.example:443/ocpp", "auth_key": "0123456789abcdef"}
    assert deploy.validate_config(cfg) == "ocpp.url wss:// needs ocpp.ca"
    cfg["ocpp"]["ca"] = "/trust/csms.pem"
    assert deploy.validate_config(cfg) is None
    bad = deploy.build_config({}, None, "cp-7", "sim", ocpp_url="http://x/ocpp")
    assert "ocpp.url must be null or a ws://" in deploy.validate_config(bad)
    short = deploy.build_config({}, None, "cp-7", "sim", ocpp_url="ws://h/o", ocpp_auth_key="short")
    assert "ocpp.auth_key" in deploy.validate_config(short)


def test_deploy_help_lists_the_ocpp_options(capsys):
    import pytest
    with pytest.raises(SystemExit):
        deploy.main(["--help"])
    out = capsys.readouterr().out
    assert "--ocpp URL" in out and "--ocpp-auth-key K" in out
