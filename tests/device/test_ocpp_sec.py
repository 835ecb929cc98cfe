# mptest: heapsize=128K prep=tests.prep.ocpp_sec_certs:make
# Certificate management of the security whitepaper (firmware/ocpp/sec.py) on
# a scratch directory, with a stand-in for the link (only what sec.py reads:
# the store directory, the url, the wall clock, security_event): the
# certificateHashData against cryptography's OCSP CertID (tests/prep/
# ocpp_sec_certs.py), each rejection rule with nothing written, the store
# limit, deletion and the last-root rule of a wss:// link, bad payloads.
import gc
import json
import mptest
from firmware.hal import simflash
from firmware.ocpp import sec, certstore, rpc

_dir = None
_exp = None


class Lk:
    def __init__(self, url="ws://127.0.0.1/ocpp", now=None):
        self._dir = _dir
        self.url = url
        self.cfg = {"url": url}
        self.events = []
        self.now = _exp["now"] if now is None else now

    def _now_s(self):
        return self.now

    def security_event(self, kind, info=None):
        self.events.append((kind, info))


def pem(name):
    with open(mptest.data_path(name + ".pem")) as f:
        return f.read()


def setup():
    global _dir, _exp
    _dir = simflash.tmpdir("evse-osec")
    with open(mptest.data_path("expected.json")) as f:
        _exp = json.load(f)


def teardown():
    simflash.rmtree(_dir)


def _fresh():
    simflash.rmtree(_dir)
    import os
    os.mkdir(_dir)
    gc.collect()


def _install(lk, kind, name):
    return sec.InstallCertificate(lk, {"certificateType": kind, "certificate": pem(name)})["status"]


def _ids(lk, kind):
    return sec.GetInstalledCertificateIds(lk, {"certificateType": kind})


def _stored():
    return len(certstore.load(_dir, sec.MF)) + len(certstore.load(_dir, sec.CS))


def test_hash_data_matches_cryptography():
    _fresh()
    lk = Lk()
    for name, kind in (("mf", sec.MF), ("mf_ed", sec.MF), ("cs1", sec.CS), ("cs2", sec.CS)):
        mptest.eq(_install(lk, kind, name), "Accepted", name)
    r = _ids(lk, sec.MF)
    mptest.eq(r["status"], "Accepted")
    mptest.eq(r["certificateHashData"], [_exp["hash"]["mf"], _exp["hash"]["mf_ed"]])
    mptest.eq(r["certificateHashData"][0]["serialNumber"], "FFF")     # 4095, the whitepaper's example
    r = _ids(lk, sec.CS)
    mptest.eq(r["certificateHashData"], [_exp["hash"]["cs1"], _exp["hash"]["cs2"]])
    mptest.eq(r["certificateHashData"][1]["serialNumber"], "1")
    mptest.eq(sec.serial_hex(b"\x00\x80\x01"), "8001")
    mptest.eq(sec.serial_hex(b"\x00"), "0")


def test_install_twice_is_stored_once_and_reported_once():
    _fresh()
    lk = Lk()
    mptest.eq(_install(lk, sec.MF, "mf"), "Accepted")
    mptest.eq(_install(lk, sec.MF, "mf"), "Accepted")
    mptest.eq(len(certstore.load(_dir, sec.MF)), 1)
    mptest.eq([k for k, _ in lk.events], ["ReconfigurationOfSecurityParameters"])
    mptest.eq(_ids(lk, sec.CS), {"status": "NotFound"})


def test_invalid_certificates_are_rejected_and_nothing_is_written():
    _fresh()
    lk = Lk()
    for name, kind in (("notca", sec.MF), ("nocertsign", sec.MF), ("noku", sec.MF),
                       ("expired", sec.MF), ("future", sec.CS), ("forged", sec.MF),
                       ("cs_ed", sec.CS)):      # TLS here verifies P-256 roots only
        mptest.eq(_install(lk, kind, name), "Rejected", name)
    for text in ("", "garbage", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                 pem("mf").replace("M", "N", 1)):
        mptest.eq(sec.InstallCertificate(lk, {"certificateType": sec.MF, "certificate": text}),
                  {"status": "Rejected"}, text[:30])
    # the wall clock not set (before 2020): validity cannot be checked, fail closed
    mptest.eq(_install(Lk(now=600000000), sec.MF, "mf"), "Rejected")
    mptest.eq(_stored(), 0)
    mptest.eq(lk.events, [])


def test_store_full_is_rejected():
    _fresh()
    lk = Lk()
    for n in ("cs1", "cs2", "cs3", "cs4"):
        mptest.eq(_install(lk, sec.CS, n), "Accepted", n)
    # M05.FR.03: more than CertificateStoreMaxLength allows -> Rejected
    mptest.eq(_install(lk, sec.CS, "cs5"), "Rejected")
    mptest.eq(len(certstore.load(_dir, sec.CS)), 4)
    mptest.eq(_install(lk, sec.MF, "mf"), "Accepted")     # the other kind has its own 4


def test_delete_rules():
    _fresh()
    lk = Lk("wss://127.0.0.1/ocpp")
    for name, kind in (("mf", sec.MF), ("cs1", sec.CS), ("cs2", sec.CS)):
        mptest.eq(_install(lk, kind, name), "Accepted")
    lk.events = []
    h = dict(_exp["hash"]["cs1"])
    h["issuerNameHash"] = h["issuerNameHash"].upper()        # CiString: case does not matter
    h["serialNumber"] = "00" + h["serialNumber"]             # nor leading zeroes
    mptest.eq(sec.DeleteCertificate(lk, {"certificateHashData": h}), {"status": "Accepted"})
    mptest.eq(_ids(lk, sec.CS)["certificateHashData"], [_exp["hash"]["cs2"]])
    mptest.eq([k for k, _ in lk.events], ["ReconfigurationOfSecurityParameters"])
    # again: gone
    mptest.eq(sec.DeleteCertificate(lk, {"certificateHashData": h}), {"status": "NotFound"})
    # the last CentralSystemRootCertificate of a wss:// link stays (M04.FR.06)
    mptest.eq(sec.DeleteCertificate(lk, {"certificateHashData": _exp["hash"]["cs2"]}), {"status": "Failed"})
    mptest.eq(len(certstore.load(_dir, sec.CS)), 1)
    # another algorithm than the one reported (M04.FR.07): not found
    h = dict(_exp["hash"]["mf"], hashAlgorithm="SHA384")
    mptest.eq(sec.DeleteCertificate(lk, {"certificateHashData": h}), {"status": "NotFound"})
    # the last Manufacturer root may go (no signed firmware until one is installed again)
    mptest.eq(sec.DeleteCertificate(lk, {"certificateHashData": _exp["hash"]["mf"]}), {"status": "Accepted"})
    mptest.eq(_ids(lk, sec.MF), {"status": "NotFound"})
    # on a ws:// link the last CentralSystemRootCertificate validates nothing: it may go
    lk.url = "ws://127.0.0.1/ocpp"
    mptest.eq(sec.DeleteCertificate(lk, {"certificateHashData": _exp["hash"]["cs2"]}), {"status": "Accepted"})
    mptest.eq(_stored(), 0)


def _code(fn, p):
    try:
        fn(Lk(), p)
    except rpc.CallError as e:
        return e.code
    return None


def test_bad_payloads_are_call_errors_and_change_nothing():
    _fresh()
    mptest.eq(_code(sec.InstallCertificate, {"certificateType": "V2GRootCertificate", "certificate": pem("mf")}),
              rpc.PROPERTY)
    mptest.eq(_code(sec.InstallCertificate, {"certificateType": sec.MF, "certificate": 5}), rpc.TYPE)
    mptest.eq(_code(sec.InstallCertificate, {"certificateType": sec.MF}), rpc.OCCURENCE)
    mptest.eq(_code(sec.InstallCertificate, {"certificateType": sec.MF, "certificate": pem("mf"), "x": 1}),
              rpc.FORMAT)
    mptest.eq(_code(sec.InstallCertificate, {"certificateType": sec.MF, "certificate": "A" * 5501}),
              rpc.PROPERTY)
    mptest.eq(_code(sec.GetInstalledCertificateIds, {}), rpc.OCCURENCE)
    mptest.eq(_code(sec.DeleteCertificate, {"certificateHashData": "x"}), rpc.TYPE)
    h = dict(_exp["hash"]["mf"], extra="1")
    mptest.eq(_code(sec.DeleteCertificate, {"certificateHashData": h}), rpc.FORMAT)
    h = dict(_exp["hash"]["mf"], serialNumber="1" * 41)
    mptest.eq(_code(sec.DeleteCertificate, {"certificateHashData": h}), rpc.PROPERTY)
    mptest.eq(_stored(), 0)


class Q:
    # what events.py reads of the link: the directory, the queue, the clock
    def __init__(self):
        self._dir = _dir
        self._sec = []
        self._boot_ev = "SoftReset"

    def _ts(self):
        return "2026-06-01T00:00:00Z"


def test_security_event_queue_on_flash():
    _fresh()
    from firmware.ocpp import events
    import os
    q = Q()
    events.add(q, "auth", "upgrade refused: HTTP/1.1 401 Unauthorized")
    events.add(q, "StartupOfTheDevice")
    mptest.eq(q._sec[0], {"type": "FailedToAuthenticateAtCentralSystem", "timestamp": "2026-06-01T00:00:00Z",
                          "techInfo": "upgrade refused: HTTP/1.1 401 Unauthorized"})
    mptest.eq(q._sec[1], {"type": "StartupOfTheDevice", "timestamp": "2026-06-01T00:00:00Z"})
    events.boot(q)
    mptest.eq((q._boot_ev, q._sec[2]["type"], q._sec[2]["techInfo"]), (None, "ResetOrReboot", "SoftReset"))
    for i in range(10):
        events.add(q, "memory", "x" * 300)
    mptest.eq(len(q._sec), events.MAX)                        # the newest kept
    mptest.eq(q._sec[-1]["type"], "MemoryExhaustion")
    mptest.eq(len(q._sec[-1]["techInfo"]), 255)
    # read back after a reboot: the same queue
    r = Q()
    events.load(r)
    mptest.eq(r._sec, q._sec)
    # answered one by one: the file goes when the queue is empty
    head = r._sec[0]
    events.done(r, {"type": "not the head"})
    mptest.eq(r._sec[0], head)
    while r._sec:
        events.done(r, r._sec[0])
    mptest.raises(OSError, os.stat, _dir + "/secq.json")
    events.load(r)
    mptest.eq(r._sec, [])
    # flash can lie: entries that are not what add() wrote are dropped, garbage is an empty queue
    with open(_dir + "/secq.json", "w") as f:
        json.dump({"q": [{"type": "A", "timestamp": "t"}, {"type": 1, "timestamp": "t"}, "x",
                         {"type": "B", "timestamp": "t", "evil": "1"}, {"type": "C", "timestamp": "t",
                                                                        "techInfo": 5}]}, f)
    events.load(r)
    mptest.eq(r._sec, [{"type": "A", "timestamp": "t"}])
    for text in ("[1, 2]", "{not json", ""):
        with open(_dir + "/secq.json", "w") as f:
            f.write(text)
        events.load(r)
        mptest.eq(r._sec, [], text)
