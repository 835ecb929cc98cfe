# The root certificates a charge point trusts for OCPP (security whitepaper
# ed. 3, "Certificate management"): ManufacturerRootCertificate (the roots a
# firmware signing certificate of SignedUpdateFirmware must chain to) and
# CentralSystemRootCertificate (the roots of the CSMS's wss:// certificate).
#
# Layout on flash, under the link's directory (<root>/ocpp/certs/):
#   M0.der .. M3.der   Manufacturer roots
#   C0.der .. C3.der   Central System roots
# Each file is the certificate's DER followed by a 4-byte big-endian CRC-32 of
# the DER. Flash can lie: a file whose CRC does not match is not trusted (it
# is skipped, as if it were absent: fail closed) and `bad` counts it.
# Written as <name>.tmp and renamed, so a power cut leaves the old set.
# No parsing here (x509.py does that); no clock.
import os
from binascii import crc32
from micropython import const

KINDS = {"ManufacturerRootCertificate": "M", "CentralSystemRootCertificate": "C"}
MAX_PER_KIND = const(4)
_MAX_DER = const(4096)


def _dir(root):
    return root.rstrip("/") + "/certs"


def _crc(b):
    return (crc32(b) & 0xFFFFFFFF).to_bytes(4, "big")


def _read(path):
    # DER of one stored certificate, or None when absent or corrupt
    try:
        n = os.stat(path)[6]
        if n < 5 or n > _MAX_DER + 4:
            return None
        with open(path, "rb") as f:
            data = f.read(n)     # its size, not _MAX_DER: no 4 KB block on a fragmented heap
    except OSError:
        return None
    if len(data) != n:
        return None
    der = data[:-4]
    if _crc(der) != data[-4:]:
        return None
    return der


def entries(root, kind):
    """[(name, der)] of the valid certificates of `kind` (a KINDS key)."""
    p = KINDS[kind]
    d = _dir(root)
    out = []
    for i in range(MAX_PER_KIND):
        name = "%s%d" % (p, i)
        der = _read(d + "/" + name + ".der")
        if der is not None:
            out.append((name, der))
    return out


def load(root, kind):
    """The DER of every valid certificate of `kind`, in slot order."""
    return [der for _, der in entries(root, kind)]


def bad(root):
    """How many stored files fail their check (present but not trusted)."""
    d = _dir(root)
    n = 0
    for p in KINDS.values():
        for i in range(MAX_PER_KIND):
            path = "%s/%s%d.der" % (d, p, i)
            try:
                os.stat(path)
            except OSError:
                continue
            if _read(path) is None:
                n += 1
    return n


def add(root, kind, der):
    """Store `der` as a certificate of `kind`; returns its name. The same DER
    twice is stored once. Raises ValueError when the kind is full (nothing
    changes) or the DER is empty or too large."""
    if not der or len(der) > _MAX_DER:
        raise ValueError("certificate size %d" % len(der))
    p = KINDS[kind]
    d = _dir(root)
    try:
        os.mkdir(d)
    except OSError:
        pass
    free = None
    for i in range(MAX_PER_KIND):
        name = "%s%d" % (p, i)
        cur = _read(d + "/" + name + ".der")
        if cur == der:
            return name
        if cur is None and free is None:
            free = name       # absent or corrupt: the slot may be reused
    if free is None:
        raise ValueError("%d %s installed already" % (MAX_PER_KIND, kind))
    path = d + "/" + free + ".der"
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(der)
        f.write(_crc(der))
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)
    return free


def remove(root, name):
    """Delete the stored certificate `name` (from entries()); False if absent."""
    try:
        os.remove(_dir(root) + "/" + name + ".der")
        return True
    except OSError:
        return False
