"""The protected configuration format written by the host tools
(tools/provision.py config_file/write_config, used by provision, vboard and
deploy) is what the device's firmware/config.py accepts - and a flipped bit
in what they write makes the device fail closed (docs/security.md)."""
import json
import subprocess

from tools import mpunix, provision

_LOAD = ("import json\nfrom firmware import config\ncfg = config.load(%r)\n"
         "print('@@CFG ' + json.dumps([cfg, config.last_error]))\n")


def _device_load(d):
    p = subprocess.run([mpunix.binary(), "-X", "heapsize=256K", "-c", _LOAD % str(d)], env=mpunix.env(),
                       capture_output=True, text=True, timeout=60)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("@@CFG ")]
    assert line, p.stdout + p.stderr
    return json.loads(line[0][6:])


def test_host_written_config_is_accepted_and_checked_by_the_device(tmp_path):
    cfg = provision.default_config("cp-9", "sim", "10.0.0.5:1884")
    cfg["max_current_a"] = 16
    provision.write_config(str(tmp_path), cfg, seq=41)
    a, b = (tmp_path / "config.json").read_bytes(), (tmp_path / "config.bak").read_bytes()
    assert a == b and json.loads(a)["_seq"] == 41
    got, err = _device_load(tmp_path)
    assert err is None and "fault" not in got
    assert (got["device_id"], got["max_current_a"], got["mqtt"]["host"], got["mqtt"]["port"]) == \
        ("cp-9", 16, "10.0.0.5", 1884)
    bad = a.replace(b'"max_current_a": 16', b'"max_current_a": 36')
    assert bad != a
    for name in ("config.json", "config.bak"):
        (tmp_path / name).write_bytes(bad)
    got, err = _device_load(tmp_path)
    assert got["max_current_a"] == 0 and "no valid configuration" in got["fault"]
