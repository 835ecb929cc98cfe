"""firmware/ocpp/ws.py (the device's WebSocket client) in the MicroPython unix
port against a real server: the pinned `websockets` package (the one the
`ocpp` package runs on), plain and over TLS. The server side checks what the
client sent (Basic auth, subprotocol, masking is checked by websockets)."""
import asyncio
import base64
import json
import subprocess
import threading

import pytest

from tools import mpunix

websockets = pytest.importorskip("websockets")
from websockets.asyncio.server import serve  # noqa: E402
from websockets.datastructures import Headers  # noqa: E402
from websockets.http11 import Response  # noqa: E402

# MicroPython side: open, then pump with the real clock until a deadline;
# every event is printed as one JSON line.
CLIENT = r"""
import sys, time, json
from firmware.ocpp import ws as W
url, path, auth, ca, script = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
cad = None
if ca != "-":
    cad = []
    for name in ca.split(","):
        with open(name, "rb") as f:
            cad.append(f.read())
    if len(cad) == 1:
        cad = cad[0]
w = W.WS(in_max=1024)
now = time.ticks_ms()
w.open(url, path, now, protocol="ocpp1.6", auth=auth.encode() if auth != "-" else None, ca=cad)
end = time.ticks_add(now, 8000)
sent = False
msgs = 0
while time.ticks_diff(end, time.ticks_ms()) > 0:
    now = time.ticks_ms()
    try:
        m = w.poll(now)
    except W.WSError as e:
        print(json.dumps({"error": str(e), "oversize": w.oversize, "pongs": w.pongs, "fail": w.fail}))
        break
    if w.is_open and not sent:
        sent = True
        print(json.dumps({"open": True}))
        for t in script.split("|"):
            w.send("y" * int(t[1:]) if t.startswith("*") else t)
        w.ping(b"hb")
    if m is not None:
        msgs += 1
        print(json.dumps({"msg": m.decode(), "oversize": w.oversize}))
        if m == b"bye":
            w.close(1000)
            print(json.dumps({"closed": True, "pongs": w.pongs}))
            break
    time.sleep_ms(2)
else:
    print(json.dumps({"timeout": True, "state": w.state}))
"""


class Server:
    """websockets server in a thread: echoes text, 'big' -> a 3000-byte reply,
    'close' -> server closes with 4000, 'bye' echoed last. Records requests."""

    def __init__(self, tls=None, select_protocol=True, auth=None):
        self.tls = tls
        self.select_protocol = select_protocol
        self.auth = auth
        self.requests = []
        self.received = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _check(self, conn, request):
        self.requests.append(dict(request.headers.raw_items()))
        if self.auth is not None:
            want = "Basic " + base64.b64encode(self.auth.encode()).decode()
            if request.headers.get("Authorization") != want:
                return Response(401, "Unauthorized", Headers([("WWW-Authenticate", "Basic")]), b"")
        return None

    async def _handler(self, ws):
        async for m in ws:
            self.received.append(m)
            if m == "big":
                await ws.send("x" * 3000)
            elif m == "close":
                await ws.close(4000, "go away")
            else:
                await ws.send(m)

    async def _main(self):
        def sel(conn, offered):
            return "ocpp1.6" if self.select_protocol and "ocpp1.6" in offered else None
        async with serve(self._handler, "127.0.0.1", 0, ssl=self.tls, select_subprotocol=sel,
                         process_request=self._check, ping_interval=0.3, ping_timeout=2) as srv:
            self.port = srv.sockets[0].getsockname()[1]
            self.stop_ev = asyncio.Event()
            self.ready.set()
            await self.stop_ev.wait()

    def _run(self):
        self.loop.run_until_complete(self._main())

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *a):
        self.loop.call_soon_threadsafe(self.stop_ev.set)
        self.thread.join(5)


def _client(tmp_path, url, path="/cp1", auth="-", ca="-", script="hello|bye"):
    p = tmp_path / "wsclient.py"
    p.write_text(CLIENT)
    r = subprocess.run(mpunix.argv(str(p), url, path, auth, ca, script, heap="96K"),
                       env=mpunix.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr + r.stdout
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def test_upgrade_auth_subprotocol_echo_ping_and_close(tmp_path):
    with Server(auth="cp1:s3cret") as s:
        ev = _client(tmp_path, "ws://127.0.0.1:%d/ocpp/" % s.port, auth="cp1:s3cret",
                     script="hello|*600|bye")
    assert ev[0] == {"open": True}
    assert [e["msg"] for e in ev if "msg" in e] == ["hello", "y" * 600, "bye"]
    assert ev[-1]["closed"] is True
    h = s.requests[0]
    assert h["Sec-WebSocket-Protocol"] == "ocpp1.6"
    assert s.received == ["hello", "y" * 600, "bye"]   # websockets unmasks: masking was right


def test_bad_basic_auth_is_a_refused_upgrade(tmp_path):
    with Server(auth="cp1:s3cret") as s:
        ev = _client(tmp_path, "ws://127.0.0.1:%d" % s.port, auth="cp1:wrong")
    assert ev == [{"error": "upgrade refused: HTTP/1.1 401 Unauthorized", "oversize": 0, "pongs": 0,
                   "fail": "auth"}]


def test_server_without_the_ocpp_subprotocol_is_refused(tmp_path):
    with Server(select_protocol=False) as s:
        ev = _client(tmp_path, "ws://127.0.0.1:%d" % s.port)
    assert ev[0]["error"] == "server did not accept subprotocol ocpp1.6"
    assert s.received == []


def test_oversize_message_is_discarded_and_the_stream_continues(tmp_path):
    with Server() as s:
        ev = _client(tmp_path, "ws://127.0.0.1:%d" % s.port, script="big|after|bye")
    msgs = [e for e in ev if "msg" in e]
    assert [m["msg"] for m in msgs] == ["after", "bye"]
    assert msgs[0]["oversize"] == 1


def test_server_close_and_refused_port(tmp_path):
    with Server() as s:
        ev = _client(tmp_path, "ws://127.0.0.1:%d" % s.port, script="close")
        port = s.port
    assert ev[-1]["error"] == "closed by server (4000)"
    ev = _client(tmp_path, "ws://127.0.0.1:%d" % port)
    assert ev[-1]["error"] in ("connection refused", "socket error ECONNREFUSED")


def test_pings_from_the_server_are_answered(tmp_path):
    # the server pings every 0.3 s and drops the client after 2 s without pong;
    # the client echoes for ~1.5 s of the run and must still be connected
    with Server() as s:
        ev = _client(tmp_path, "ws://127.0.0.1:%d" % s.port, script="|".join(["p"] * 3) + "|bye")
    assert ev[-1].get("closed") is True


def test_wss_with_the_ca_and_with_a_wrong_ca(tmp_path):
    import ssl
    from tests.prep.broker import make_certs
    certs = make_certs(str(tmp_path))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["server.pem"], certs["server.key"])
    with Server(tls=ctx) as s:
        ev = _client(tmp_path, "wss://127.0.0.1:%d" % s.port, ca=certs["ca.der"])
        assert [e["msg"] for e in ev if "msg" in e] == ["hello", "bye"]
        other = tmp_path / "other.der"
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        other.write_bytes(x509.load_pem_x509_certificate(open(certs["other_ca.pem"], "rb").read())
                          .public_bytes(serialization.Encoding.DER))
        ev = _client(tmp_path, "wss://127.0.0.1:%d" % s.port, ca=str(other))
        # several trust anchors (the installer's and those installed over OCPP): any one may verify
        both = _client(tmp_path, "wss://127.0.0.1:%d" % s.port, ca="%s,%s" % (other, certs["ca.der"]))
    assert ev == [{"error": "TLS: The certificate is not correctly signed by the trusted CA",
                   "oversize": 0, "pongs": 0, "fail": "cert"}]
    assert [e["msg"] for e in both if "msg" in e] == ["hello", "bye"]
