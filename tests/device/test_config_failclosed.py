# mptest: heapsize=160K
# Heap: the whole agent (charging core, commands, config, sim HAL) plus the trial-boot
# health chain (boot.py, ota/health.py, ota/job.py) compiled from source.
# A board whose configuration is corrupt on its LittleFS offers no current: an EV
# plugged in and asking to charge never gets PWM or the contactor, the status
# says why, and a remote set_config cannot repair it (only the installer can).
import mptest
import boot   # first, as on a board (the bootstrap runs before the agent): boot.py is
#               source, and compiling it later, beside the agent, needs contiguous blocks
from firmware import config
from firmware.agent import Agent
from firmware.hal.sim import SimBoard
from firmware.hal import simflash

P = 20
_MNT = "/t_cfgfc"
_tmp = None
_dev = None


def setup():
    global _tmp, _dev
    _tmp = simflash.tmpdir("evcfgfc")
    _dev = simflash.FileBlockDevice(_tmp + "/flash.img", 512, 64, create=True)
    simflash.mkfs(_dev)
    simflash.mount(_dev, _MNT, mtime=False)


def teardown():
    simflash.umount(_MNT)
    _dev.close()
    simflash.rmtree(_tmp)


def _charge_attempt(cfg):
    b = SimBoard(relay_delay_ms=30)
    a = Agent(b, cfg, _MNT, {"slot": "a", "version": "1.0.0"}, link=None, updater=None,
              sessions=None, health=None)
    b.wdt_start(a.wdt_ms)
    b.plug("C", max_current_a=32)
    closed = pwm = 0
    for _ in range(5000 // P):
        b.advance(P)
        a.tick(b.ticks_ms())
        closed += b.relay_commanded
        pwm += b.duty not in (0.0, 100.0)
    return a, closed, pwm


def test_corrupt_config_offers_no_current_and_says_why():
    good = {"device_id": "cp-9", "board": "sim", "max_current_a": 16}
    mptest.eq(config.install(_MNT, good), None)
    a, closed, pwm = _charge_attempt(config.load(_MNT))
    mptest.true(closed > 0 and pwm > 0, "the valid configuration charges", closed, pwm)
    with open(_MNT + "/config.json", "rb") as f:
        data = f.read()
    bad = data.replace(b'"max_current_a": 16', b'"max_current_a": 36')
    mptest.true(bad != data)
    for name in ("config.json", "config.bak"):
        with open(_MNT + "/" + name, "wb") as f:
            f.write(bad)
    cfg = config.load(_MNT)
    a, closed, pwm = _charge_attempt(cfg)
    mptest.eq((closed, pwm), (0, 0), "no current offered without a valid configuration")
    mptest.true(a.last_error and "no valid configuration" in a.last_error, a.last_error)
    mptest.eq(a.evse.session, None)
    r = a.command("set_config", {"id": 1, "changes": {"telemetry_ms": 5000}})
    mptest.eq(r["ok"], False)
    mptest.true("no valid configuration" in r["error"], r)
    with open(_MNT + "/config.json", "rb") as f:
        mptest.eq(f.read(), bad, "flash unchanged")


def test_a_trial_boot_without_valid_configuration_is_not_confirmed():
    cfg = config.load(_MNT)          # empty flash: fail-safe configuration
    mptest.true(cfg.get("fault"))
    b = SimBoard()
    a = Agent(b, cfg, _MNT, {"slot": "b", "version": "1.1.0", "trial": True}, link=None, updater=None,
              sessions=None, commands=None)
    mptest.true(a.health is not None)
    ok, within = a.health.checks["backend"]
    mptest.eq(ok(), False)           # the trial can only end in a rollback, never a confirmation
