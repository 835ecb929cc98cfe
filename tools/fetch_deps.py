"""Fill lib/ with the third-party MicroPython libraries the agent needs.

umqtt.simple is only published on PyPI as a source archive without a build
script, so pip refuses to install it. We fetch that archive directly, check its
pinned SHA-256, and unpack the one module we need. Version 1.3.4 imports
``ussl``, which current MicroPython no longer has; the import line is adapted
to ``ssl`` on the way (the file stays third-party code and is never committed).

Usage: python tools/fetch_deps.py [LIBDIR]
"""
import hashlib
import io
import os
import sys
import tarfile
import urllib.request

PACKAGES = [
    {
        "name": "micropython-umqtt.simple",
        "version": "1.3.4",
        "url": "https://files.pythonhosted.org/packages/bd/cf/"
        "697e3418b2f44222b3e848078b1e33ee76aedca9b6c2430ca1b1aec1ce1d/"
        "micropython-umqtt.simple-1.3.4.tar.gz",
        "sha256": "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f",
        "files": {"umqtt/simple.py": "umqtt/simple.py"},
        "patch": {"umqtt/simple.py": [("import ussl\n", "import ssl as ussl\n")]},
    },
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fetch(pkg, cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, os.path.basename(pkg["url"]))
    if not os.path.exists(path):
        with urllib.request.urlopen(pkg["url"], timeout=60) as r:
            data = r.read()
        tmp = path + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != pkg["sha256"]:
        os.remove(path)
        raise SystemExit(
            "fetch_deps: %s: SHA-256 mismatch (got %s, pinned %s)"
            % (pkg["name"], digest, pkg["sha256"])
        )
    return data


def install(libdir):
    cache_dir = os.path.join(ROOT, ".cache", "deps")
    for pkg in PACKAGES:
        data = _fetch(pkg, cache_dir)
        prefix = "%s-%s/" % (pkg["name"], pkg["version"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for src, dst in pkg["files"].items():
                text = tar.extractfile(prefix + src).read().decode()
                for old, new in pkg.get("patch", {}).get(src, []):
                    if old not in text:
                        raise SystemExit("fetch_deps: %s: patch target %r not found" % (src, old))
                    text = text.replace(old, new)
                out = os.path.join(libdir, dst)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out + ".tmp", "w") as f:
                    f.write(text)
                os.replace(out + ".tmp", out)
        print("deps: %s %s -> %s" % (pkg["name"], pkg["version"], libdir))


if __name__ == "__main__":
    install(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "lib"))
