"""Host tests of tools/serve.py: ranges, validators, fault injection, path safety."""
import http.client
import os
import socket
import subprocess
import sys
import time

import pytest

from tools import serve

DATA = bytes((i * 7 + 3) & 0xFF for i in range(50000))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    (d / "fw.img").write_bytes(DATA)
    (d / "sub").mkdir()
    (d / "sub" / "x.bin").write_bytes(b"hello")
    (tmp_path_factory.getbasetemp() / "secret.txt").write_text("no")
    faults = serve.Faults()
    s, port = serve.serve(str(d), faults=faults)
    yield s, port, faults
    s.shutdown()
    s.server_close()


def _get(port, path, headers=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    try:
        body = r.read()
    except http.client.IncompleteRead as e:
        body = e.partial
    c.close()
    return r, body


def _raw(port, path, headers=""):
    """Raw request: returns (header bytes, body bytes) read until close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, headers)).encode())
    data = b""
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        data += b
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body


def test_whole_file_with_validators(srv):
    _, port, _ = srv
    r, body = _get(port, "/fw.img")
    assert r.status == 200 and body == DATA
    assert r.getheader("Content-Length") == str(len(DATA))
    assert r.getheader("Accept-Ranges") == "bytes"
    assert r.getheader("ETag") and r.getheader("Last-Modified")


def test_open_range_gives_206(srv):
    _, port, _ = srv
    r, body = _get(port, "/fw.img", {"Range": "bytes=1000-"})
    assert r.status == 206
    assert r.getheader("Content-Range") == "bytes 1000-49999/50000"
    assert body == DATA[1000:]


def test_closed_and_suffix_ranges(srv):
    _, port, _ = srv
    r, body = _get(port, "/fw.img", {"Range": "bytes=10-19"})
    assert (r.status, body) == (206, DATA[10:20])
    r, body = _get(port, "/fw.img", {"Range": "bytes=-5"})
    assert (r.status, body) == (206, DATA[-5:])
    r, body = _get(port, "/fw.img", {"Range": "bytes=49990-70000"})
    assert (r.status, body) == (206, DATA[49990:])


def test_range_past_end_is_416(srv):
    _, port, _ = srv
    r, body = _get(port, "/fw.img", {"Range": "bytes=50000-"})
    assert r.status == 416 and body == b""
    assert r.getheader("Content-Range") == "bytes */50000"


def test_multi_range_and_garbage_serve_whole_file(srv):
    _, port, _ = srv
    for h in ("bytes=0-1,5-6", "items=0-1", "bytes=x-"):
        r, body = _get(port, "/fw.img", {"Range": h})
        assert (r.status, body) == (200, DATA), h


def test_if_range_mismatch_serves_whole_file(srv):
    _, port, _ = srv
    r, _ = _get(port, "/fw.img")
    etag = r.getheader("ETag")
    r, body = _get(port, "/fw.img", {"Range": "bytes=100-", "If-Range": etag})
    assert (r.status, body) == (206, DATA[100:])
    r, body = _get(port, "/fw.img", {"Range": "bytes=100-", "If-Range": '"other"'})
    assert (r.status, body) == (200, DATA)


def test_head(srv):
    _, port, _ = srv
    r, body = _get(port, "/fw.img", method="HEAD")
    assert r.status == 200 and body == b"" and r.getheader("Content-Length") == "50000"


def test_paths_outside_root_are_404(srv):
    _, port, _ = srv
    assert _get(port, "/sub/x.bin")[0].status == 200
    for p in ("/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/", "/sub", "/nope"):
        head, _ = _raw(port, p)
        assert " 404 " in head.split("\r\n")[0], p


def test_fault_drop_after_n_bytes(srv):
    _, port, _ = srv
    head, body = _raw(port, "/fw.img?drop=1234")
    assert "Content-Length: 50000" in head
    assert body == DATA[:1234]


def test_fault_drop_random_is_reproducible(srv):
    _, port, faults = srv
    faults.clear()
    a = _raw(port, "/fw.img?droprand=5:100:30000")[1]
    b = _raw(port, "/fw.img?droprand=5:100:30000")[1]
    assert 100 <= len(a) <= 30000 and a == DATA[:len(a)]
    assert len(a) != len(b) and b == DATA[:len(b)]   # a new offset each time
    faults.clear()
    assert _raw(port, "/fw.img?droprand=5:100:30000")[1] == a  # same sequence again


def test_fault_extra_bytes(srv):
    _, port, _ = srv
    head, body = _raw(port, "/fw.img?extra=300", "Range: bytes=49000-\r\n")
    assert "Content-Length: 1000" in head
    assert body[:1000] == DATA[49000:] and len(body) == 1300


def test_fault_ignore_range(srv):
    _, port, _ = srv
    head, body = _raw(port, "/fw.img?norange=1", "Range: bytes=100-\r\n")
    assert head.startswith("HTTP/1.1 200") and body == DATA


def test_fault_wrong_content_length(srv):
    _, port, _ = srv
    head, body = _raw(port, "/fw.img?cl=-10")
    assert "Content-Length: 49990" in head and body == DATA
    head, body = _raw(port, "/fw.img?cl=25")
    assert "Content-Length: 50025" in head and body == DATA


def test_fault_stall(srv):
    _, port, _ = srv
    t0 = time.monotonic()
    head, body = _raw(port, "/fw.img?stall=0.3&stall_at=100")
    assert body == DATA and time.monotonic() - t0 >= 0.3


def test_fault_status(srv):
    _, port, _ = srv
    assert _get(port, "/fw.img?status=503")[0].status == 503


def test_faults_object_and_endpoint_queue_one_shot_rules(srv):
    _, port, faults = srv
    faults.push("/fw.img", drop=10)
    assert _raw(port, "/fw.img")[1] == DATA[:10]
    assert _raw(port, "/fw.img")[1] == DATA
    r, _ = _get(port, "/_fault?path=/fw.img&drop=20&times=2")
    assert r.status == 204
    assert len(_raw(port, "/fw.img")[1]) == 20
    assert len(_raw(port, "/fw.img")[1]) == 20
    assert _raw(port, "/fw.img")[1] == DATA
    assert _get(port, "/_fault?bogus=1")[0].status == 400
    with pytest.raises(ValueError):
        faults.push(bogus=1)
    assert any(entry[0] == "/fw.img" for entry in faults.log)


def test_faults_off_without_faults_arg(tmp_path):
    (tmp_path / "fw.img").write_bytes(DATA)
    s, port = serve.serve(str(tmp_path))
    try:
        assert _raw(port, "/fw.img?drop=5")[1] == DATA
        assert " 404 " in _raw(port, "/_fault?drop=5")[0].split("\r\n")[0]
    finally:
        s.shutdown()
        s.server_close()


def test_parse_range_unit():
    assert serve.parse_range(None, 10) is None
    assert serve.parse_range("bytes=0-", 10) == (0, 9)
    assert serve.parse_range("bytes=3-4", 10) == (3, 4)
    assert serve.parse_range("bytes=10-", 10) == "unsatisfiable"
    assert serve.parse_range("bytes=-0", 10) == "unsatisfiable"
    assert serve.parse_range("bytes=5-2", 10) is None


def test_main_cli_serves_and_writes_port_file(tmp_path):
    (tmp_path / "fw.img").write_bytes(DATA)
    pf = tmp_path / "port"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "-m", "tools.serve", str(tmp_path), "--port", "0",
                          "--port-file", str(pf)], cwd=root, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if pf.exists():
                break
            time.sleep(0.05)
        port = int(pf.read_text())
        r, body = _get(port, "/fw.img", {"Range": "bytes=49999-"})
        assert (r.status, body) == (206, DATA[-1:])
    finally:
        p.terminate()
        p.wait(10)


def test_main_rejects_missing_dir(tmp_path, capsys):
    assert serve.main([str(tmp_path / "nope"), "--port", "0"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_fault_redirect_and_stall_head(srv):
    _, port, _ = srv
    head, _ = _raw(port, "/fw.img?redirect=/sub/x.bin")
    assert head.startswith("HTTP/1.1 302") and "Location: /sub/x.bin" in head
    t0 = time.monotonic()
    head, body = _raw(port, "/sub/x.bin?stall_head=0.2")
    assert body == b"hello" and time.monotonic() - t0 >= 0.2


# ---- what is served, resource limits, fault injection only on loopback (issue 10/14) -------

def _status(port, path):
    return _raw(port, path)[0].split("\r\n")[0]


def test_serves_only_images_and_their_descriptors(tmp_path):
    # what `evsectl serve build` used to hand out: the signing key, the rollout DB, credentials
    files = {"evse-sim-1.1.0.img": DATA[:100], "evse-sim-1.1.0.json": b'{"image": "x"}', "blob.bin": b"b",
             "release.pem": b"KEY", "keys/release.pem": b"KEY", "keys/release.pub": b"P", "rollouts.db": b"DB",
             "credentials.json": b"{}", "devices/cp-1.json": b"{}", "ca.key": b"K", "server.pem": b"C",
             ".hidden.img": b"h", "notes.txt": b"t", "link.img": None}
    for name, data in files.items():
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        if data is not None:
            p.write_bytes(data)
    os.symlink(str(tmp_path / "release.pem"), str(tmp_path / "link.img"))   # an image name on a key
    s, port = serve.serve(str(tmp_path))
    try:
        ok = {"/evse-sim-1.1.0.img", "/evse-sim-1.1.0.json", "/blob.bin"}
        for name in files:
            st = _status(port, "/" + name)
            assert (" 200 " in st) == ("/" + name in ok), (name, st)
        assert _raw(port, "/evse-sim-1.1.0.json")[1] == b'{"image": "x"}'
    finally:
        s.shutdown()
        s.server_close()


def test_a_client_that_never_finishes_its_request_is_dropped(tmp_path):
    (tmp_path / "fw.img").write_bytes(DATA)
    s, port = serve.serve(str(tmp_path), timeout=5, header_timeout=0.5)
    try:
        for partial in (b"", b"GET /fw.img HTTP/1.1\r\nHost: x\r\n"):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(partial)
            assert c.recv(100) == b""          # closed by the server (else: socket.timeout here)
            c.close()
        # drip-feeding header bytes does not extend the deadline
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        closed = False
        for _ in range(40):
            try:
                c.sendall(b"X-a: b\r\n")
            except OSError:
                closed = True
                break
            time.sleep(0.05)
        if not closed:
            c.settimeout(10)
            try:
                closed = c.recv(100) == b""    # the server closed it (no answer to a half request)
            except ConnectionResetError:
                closed = True
        c.close()
        assert closed, "a drip-fed request kept its connection past the header deadline"
        r, body = _get(port, "/fw.img")                # the server still serves
        assert (r.status, body) == (200, DATA)
    finally:
        s.shutdown()
        s.server_close()


def test_connection_cap_answers_503_and_frees_slots(tmp_path):
    (tmp_path / "fw.img").write_bytes(DATA)
    s, port = serve.serve(str(tmp_path), timeout=10, header_timeout=10, max_connections=2)
    held = []
    try:
        for _ in range(2):                              # two idle connections take both slots
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        for _ in range(50):                             # until the server has accepted both
            if s.slots._value == 0:
                break
            time.sleep(0.02)
        head, _ = _raw(port, "/fw.img")
        assert head.startswith("HTTP/1.1 503"), head
        assert s.refused >= 1
        held.pop().close()
        for _ in range(100):
            head, body = _raw(port, "/fw.img")
            if head.startswith("HTTP/1.1 200"):
                break
            time.sleep(0.02)
        assert head.startswith("HTTP/1.1 200") and body == DATA
    finally:
        for c in held:
            c.close()
        s.shutdown()
        s.server_close()


def test_faults_refuse_non_loopback_bind(tmp_path, capsys):
    for host in ("0.0.0.0", "", "::", "10.0.0.5"):
        with pytest.raises(ValueError, match="loopback"):
            serve.serve(str(tmp_path), host=host, faults=True)
    assert serve.main([str(tmp_path), "--host", "0.0.0.0", "--port", "0", "--faults"]) == 2
    assert "loopback" in capsys.readouterr().err
    for host in ("127.0.0.1", "localhost"):
        s, _ = serve.serve(str(tmp_path), host=host, faults=True)
        s.shutdown()
        s.server_close()
    assert serve.is_loopback("::1") and not serve.is_loopback("0.0.0.0")


def test_rollout_doc_example_serves_where_devices_fetch():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "rollout.md")) as f:
        text = f.read()
    import re
    serve_line = re.search(r"evsectl serve (\S+)(.*)", text)
    base = re.search(r"--base-url http://([^:/]+):(\d+)/", text)
    assert serve_line and base
    args = serve_line.group(2)
    host = re.search(r"--host (\S+)", args)
    port = re.search(r"--port (\d+)", args)
    assert host and host.group(1) == base.group(1), (serve_line.group(0), base.group(0))
    assert port and port.group(1) == base.group(2)
