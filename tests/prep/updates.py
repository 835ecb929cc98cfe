"""Host-side (CPython) preparation for the update-job device tests.

`make_fetch(dir)`: random blobs for tests/device/test_fetch.py.
`make(dir)`: signed update images (bundles signed with `imgtool sign`) for
test_updater.py / test_powercut_update.py.
Both start a tools/serve.py server (with fault injection) in a background
thread of the pytest process, kept for the whole session, and write its port
into DIR/port (and the HTTPS server's port into DIR/tls_port).
"""
import datetime
import hashlib
import ipaddress
import os
import random

from tools import serve

_SERVERS = []  # keep them alive for the session


def _cert(d):
    """A test CA; the HTTPS server's certificate for localhost / 127.0.0.1 signed
    by it (cert.pem, key.pem; ca.der for the device); and two certificates the
    device must refuse: self-signed, expired, for another host (bad_*), and
    CA-signed but for another host name (wrongname_*)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def make(cn, sans, issuer_name, issuer_key, start, end, ca=False, key=None):
        key = key or ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer_name or name(cn))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(issuer_key or key, hashes.SHA256()), key

    def write(prefix, cert, key):
        cf, kf = os.path.join(d, prefix + "cert.pem"), os.path.join(d, prefix + "key.pem")
        with open(cf, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(kf, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        return cf, kf

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca, _ = make("evse test CA", None, None, None, now - day, now + 30 * day, ca=True, key=ca_key)
    with open(os.path.join(d, "ca.der"), "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.DER))
    local = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    good, gk = make("localhost", local, ca.subject, ca_key, now - day, now + 30 * day)
    with open(os.path.join(d, "cert.der"), "wb") as f:
        f.write(good.public_bytes(serialization.Encoding.DER))
    other = [x509.DNSName("evil.example")]
    bad, bk = make("evil.example", other, None, None, now - 60 * day, now - 30 * day)
    wrong, wk = make("evil.example", other, ca.subject, ca_key, now - day, now + 30 * day)
    write("bad_", bad, bk)
    write("wrongname_", wrong, wk)
    return write("", good, gk)


def start_servers(d, www, tls=True):
    """Serve `www` over HTTP (and HTTPS) with faults enabled; ports -> d/port, d/tls_port."""
    srv, port = serve.serve(www, faults=True)
    _SERVERS.append(srv)
    with open(os.path.join(d, "port"), "w") as f:
        f.write(str(port))
    if tls:
        cf, kf = _cert(d)
        tsrv, tport = serve.serve(www, faults=True, tls=(cf, kf))
        _SERVERS.append(tsrv)
        with open(os.path.join(d, "tls_port"), "w") as f:
            f.write(str(tport))
        for prefix in ("bad_", "wrongname_"):
            pair = (os.path.join(d, prefix + "cert.pem"), os.path.join(d, prefix + "key.pem"))
            xsrv, xport = serve.serve(www, faults=True, tls=pair)
            _SERVERS.append(xsrv)
            with open(os.path.join(d, prefix + "tls_port"), "w") as f:
                f.write(str(xport))
    return port


def make_fetch(d):
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    rng = random.Random(1234)
    for name, size in (("blob.bin", 150000), ("small.bin", 3000)):
        data = bytes(rng.getrandbits(8) for _ in range(size))
        with open(os.path.join(www, name), "wb") as f:
            f.write(data)
        with open(os.path.join(d, name + ".sha256"), "w") as f:
            f.write(hashlib.sha256(data).hexdigest())
    start_servers(d, www)


# ---------------------------------------------------------------- signed updates

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

from tools import bundle as _bundle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMGTOOL = os.path.join(os.path.dirname(sys.executable), "imgtool")
if not os.path.exists(IMGTOOL):
    IMGTOOL = os.path.join(ROOT, ".venv", "bin", "imgtool")
BOARD = "evse-sim"

AGENT = '''VERSION = %r
MODE = %r


def run(info):
    with open(info["root"] + "runlog", "a") as f:
        f.write("%%s %%s %%s\\n" %% (VERSION, info["slot"], info["trial"]))
    if MODE == "crash":
        raise RuntimeError("agent crashed")
'''


def _key(path):
    k = ed25519.Ed25519PrivateKey.generate()
    with open(path, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _tree(src, version, mode="ok", data_kb=2, seed=0):
    fw = os.path.join(src, "firmware")
    os.makedirs(fw, exist_ok=True)
    with open(os.path.join(fw, "__init__.py"), "w") as f:
        f.write("# update test firmware %s\n" % version)
    with open(os.path.join(fw, "agent.py"), "w") as f:
        f.write(AGENT % (version, mode))
    rnd = random.Random("%s-%d" % (version, seed))
    with open(os.path.join(fw, "data.bin"), "wb") as f:
        f.write(bytes(rnd.getrandbits(8) for _ in range(data_kb * 1024)))


def bundle(d, name, version, mode="ok", data_kb=2, board=BOARD, files=1):
    src = os.path.join(d, "src_" + name)
    _tree(src, version, mode, data_kb)
    for i in range(1, files):  # more (small) files for the install phase
        with open(os.path.join(src, "firmware", "m%02d.py" % i), "w") as f:
            f.write("X = %d\n" % i)
    out = os.path.join(d, name + ".evb")
    _bundle.build(src, out, version, board=board, include=["firmware"])
    return out


def sign(src, dst, key, version, sec=None, board=BOARD, header="0x20"):
    args = [IMGTOOL, "sign", "-k", key, "--version", version, "--header-size", header,
            "--pad-header", "--slot-size", str(4 << 20), "--public-key-format", "hash", "--align", "4"]
    if sec is not None:
        args += ["--security-counter", str(sec)]
    if board is not None:
        args += ["--custom-tlv", "0xa0", board]
    p = subprocess.run(args + [src, dst], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError("imgtool failed: %s%s" % (p.stdout, p.stderr))
    return dst


def _flip(path, dst, off):
    with open(path, "rb") as f:
        b = bytearray(f.read())
    b[off] ^= 0x01
    with open(dst, "wb") as f:
        f.write(b)


def make(d):
    """Keys, trusted key file, signed images; HTTP(S) servers on d/www."""
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    k1 = _key(os.path.join(d, "k1.pem"))
    k2 = _key(os.path.join(d, "k2.pem"))   # the rotated-in key
    _key(os.path.join(d, "k3.pem"))        # never trusted
    with open(os.path.join(d, "keys.bin"), "wb") as f:
        f.write(k1 + k2)
    with open(os.path.join(d, "keys_k1.bin"), "wb") as f:
        f.write(k1)
    k = lambda n: os.path.join(d, "k%d.pem" % n)
    w = lambda n: os.path.join(www, n)
    # the installed (running) firmware: 1.0.0, a bundle the tests unpack into slot a
    bundle(d, "v1", "1.0.0")
    sign(bundle(d, "v1_img", "1.0.0"), w("v1.img"), k(1), "1.0.0", sec=1)
    v2 = bundle(d, "v2", "2.0.0", data_kb=24)
    sign(v2, w("v2.img"), k(1), "2.0.0", sec=2)
    sign(bundle(d, "v3", "3.0.0"), w("v3_k2.img"), k(2), "3.0.0", sec=3)
    sign(v2, w("v2_k3.img"), k(3), "2.0.0", sec=2)
    sign(v2, w("v2_sec1.img"), k(1), "2.0.0", sec=1)
    sign(v2, w("v25_mismatch.img"), k(1), "2.5.0", sec=2)   # header 2.5.0, bundle 2.0.0
    sign(bundle(d, "v201", "2.0.1", data_kb=24), w("v201.img"), k(1), "2.0.1", sec=2)  # a re-publish
    sign(bundle(d, "v2b", "2.0.0", board="evse-other"), w("v2_board.img"), k(1), "2.0.0", sec=2,
         board="evse-other")
    sign(bundle(d, "v09", "0.9.0"), w("v09.img"), k(1), "0.9.0", sec=1)
    sign(bundle(d, "crash", "2.1.0", mode="crash"), w("crash.img"), k(1), "2.1.0", sec=2)
    _flip(w("v2.img"), w("v2_tampered.img"), 0x20 + 200)
    # small images for the power-cut campaign (few blocks, a few files)
    sign(bundle(d, "pc2", "2.0.0", data_kb=1, files=3), w("pc2.img"), k(1), "2.0.0", sec=2)
    bundle(d, "pc1", "1.0.0", data_kb=1)
    info = {}
    for name in sorted(os.listdir(www)):
        with open(w(name), "rb") as f:
            data = f.read()
        info[name] = [len(data), hashlib.sha256(data).hexdigest()]
    with open(os.path.join(d, "images.json"), "w") as f:
        json.dump(info, f)
    _file_sigs(d, w("v2.img"))
    start_servers(d, www, tls=True)


def _file_sigs(d, path):
    # the OCPP whitepaper signature of a release file (SignedUpdateFirmware):
    # fwsig.json {"key": "p256:<hex>" (the signing certificate's key as the
    # job keeps it), "sig": by that key, "other": by another key}
    from cryptography.hazmat.primitives.asymmetric import ec
    from tools import certs
    with open(path, "rb") as f:
        data = f.read()
    sk, ok = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pt = sk.public_key().public_bytes(serialization.Encoding.X962,
                                      serialization.PublicFormat.UncompressedPoint)
    with open(os.path.join(d, "fwsig.json"), "w") as f:
        json.dump({"key": "p256:" + pt.hex(), "sig": certs.sign_bytes(sk, data),
                   "other": certs.sign_bytes(ok, data)}, f)


def make_bench(d):
    """Two images of ~64 KiB and ~1 MiB (incompressible) and a server."""
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    k1 = _key(os.path.join(d, "k1.pem"))
    with open(os.path.join(d, "keys.bin"), "wb") as f:
        f.write(k1)
    bundle(d, "v1", "1.0.0")
    for name, kb in (("b64k", 64), ("b1m", 1024)):
        b = bundle(d, name, "2.0.0", data_kb=kb)
        sign(b, os.path.join(www, name + ".img"), os.path.join(d, "k1.pem"), "2.0.0", sec=1)
    start_servers(d, www, tls=False)


if __name__ == "__main__":
    # `python -m tests.prep.updates bench DIR`: prepare and keep serving (bench_update.py)
    import time
    what, d = sys.argv[1], sys.argv[2]
    os.makedirs(d, exist_ok=True)
    (make_bench if what == "bench" else make)(d)
    with open(os.path.join(d, "ready"), "w") as f:
        f.write("1")
    while True:
        time.sleep(3600)
