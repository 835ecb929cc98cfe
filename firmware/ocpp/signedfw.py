# SignedUpdateFirmware (OCPP 1.6 security whitepaper ed. 3, use case "Secure
# firmware update"), kept out of handlers.py: link.py loads this module
# instead of handlers.py for this one CALL and drops it after, so that the
# certificate check (x509.py + ecdsa_p256.py, loaded here only while it runs)
# does not also carry the other handlers' bytecode (about 8 KB on a 32-bit
# board). docs/ocpp.md "SignedUpdateFirmware".
from firmware.ocpp import rpc

_SIG_MODS = ("fwsig", "x509", "ecdsa_p256", "ed25519", "wnaf")


def _unix(t):
    # the link's clock counts from the port's epoch (2000 on some ports);
    # certificate validity (x509.py) is in UNIX seconds
    import time
    return t + (946684800 if time.gmtime(0)[0] == 2000 else 0)


def SignedUpdateFirmware(lk, p):
    # security whitepaper ed. 3, "Secure firmware update": the signing
    # certificate must chain to an installed Manufacturer root (x509.py at the
    # link's wall clock); then the job downloads, checks the signature over
    # the file with the certificate's key (fwsig.py), then the image's own
    # MCUboot signature, and installs as UpdateFirmware does. Refused: nothing
    # changes (no job, no flash write).
    rpc.only(p, ("requestId", "retries", "retryInterval", "firmware"))
    rid = rpc.get(p, "requestId", int, lo=0)
    fw = rpc.get(p, "firmware", dict)
    rpc.only(fw, ("location", "retrieveDateTime", "installDateTime", "signingCertificate",
                  "signature"))
    req = {"requestId": rid}
    for k, hi, need in (("location", 512, True), ("retrieveDateTime", 40, True),
                        ("installDateTime", 40, False), ("signingCertificate", 5500, True),
                        ("signature", 800, True)):
        v = rpc.get(fw, k, str, need, hi=hi)
        if v is not None:
            req[k] = v
    for k in ("retries", "retryInterval"):
        v = rpc.get(p, k, int, False, lo=0)
        if v is not None:
            req[k] = v
    if lk.agent.updater is None:
        raise rpc.CallError(rpc.NOT_SUPPORTED, "no update job in this build")
    import sys
    import gc
    from firmware.ocpp.link import _drop
    loaded = [m for m in _SIG_MODS if "firmware.ota." + m in sys.modules]
    had_store = "firmware.ocpp.certstore" in sys.modules
    pem = req.pop("signingCertificate")
    key = err = None
    try:
        from firmware.ocpp import certstore
        roots = certstore.load(lk._dir, "ManufacturerRootCertificate")
        certstore = None
        if not had_store:
            _drop("firmware.ocpp.certstore")
        for attempt in (0, 1):
            gc.collect()
            from firmware.ota import fwsig
            try:
                key = fwsig.check_request(pem, req["signature"], roots, _unix(lk._now_s()))
                break
            except fwsig.SigError as e:
                err = (e.kind, e.msg)
            fwsig = None
            if err[0] != "mem":
                break
            # out of heap: collect and try once more (as the image check does)
    except MemoryError:
        err = ("mem", "out of memory")
    finally:
        roots = fwsig = None
        if not had_store:
            _drop("firmware.ocpp.certstore")
        for m in _SIG_MODS:
            if m not in loaded:
                _drop("firmware.ota." + m)
        gc.collect()
    if key is None:
        kind, msg = err
        if kind == "mem":
            # out of heap is no verdict on the certificate: the CSMS may retry
            print("ocpp: SignedUpdateFirmware: %s" % msg)
            return {"status": "Rejected"}
        if kind == "sig":
            lk.security_event("InvalidFirmwareSignature", msg)
            return {"status": "Rejected"}
        lk.security_event("InvalidFirmwareSigningCertificate", msg)
        return {"status": "InvalidCertificate"}
    req["signingKey"] = key
    try:
        r = lk.start_update(req, True)
    except rpc.CallError as e:
        if e.code == rpc.GENERIC:
            # busy: an installed update awaits its reboot or trial verdict
            # (EVerest libocpp answers Rejected while another update runs too)
            return {"status": "Rejected"}
        raise
    return {"status": "AcceptedCanceled" if r == "AcceptedCanceled" else "Accepted"}
