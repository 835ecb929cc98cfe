# mptest: prep=tests.prep.updates:make_fetch timeout=300 lanes=own-prep
# The resumable HTTP(S) client firmware/ota/fetch.py against tools/serve.py
# (started by the prep function in the pytest process, faults per request).
import hashlib
import binascii
import time
import mptest
from firmware.ota import fetch

_BUF = 1024


def _port(name="port"):
    with open(mptest.data_path(name)) as f:
        return int(f.read())


def _sha(name):
    with open(mptest.data_path(name + ".sha256")) as f:
        return f.read().strip()


def _url(path, tls=False):
    if tls:
        return "https://127.0.0.1:%d%s" % (_port("tls_port"), path)
    return "http://127.0.0.1:%d%s" % (_port(), path)


class Clock:
    """Virtual milliseconds, driven by the test."""
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def _run(f, h=None, max_polls=2000000, stats=None):
    """Poll until DONE; hash delivered bytes. Real sleeps only while idle."""
    n = 0
    for _ in range(max_polls):
        r = f.poll()
        if r > 0:
            if stats is not None and r > stats[0]:
                stats[0] = r
            if h is not None:
                h.update(f.chunk)
            n += r
        elif r == fetch.DONE:
            return n
        elif r == fetch.RESTART:
            raise AssertionError("unexpected RESTART")
        else:
            time.sleep_ms(1)
    raise AssertionError("did not finish")


def _hex(h):
    return binascii.hexlify(h.digest()).decode()


def test_whole_download_bounded_chunks():
    f = fetch.Fetcher(_url("/blob.bin"), bufsize=_BUF)
    f.start(0, 150000)
    h = hashlib.sha256()
    stats = [0]
    n = _run(f, h, stats=stats)
    mptest.eq(n, 150000)
    mptest.eq(_hex(h), _sha("blob.bin"))
    mptest.eq(f.status, 200)
    mptest.true(f.etag, "validator remembered")
    # bounded work: never more than one buffer per poll()
    mptest.true(0 < stats[0] <= _BUF, stats)
    mptest.eq(f.poll(), fetch.DONE)


def test_resume_with_range_206():
    f = fetch.Fetcher(_url("/blob.bin"))
    f.start(0, None)
    h = hashlib.sha256()
    got = 0
    while got < 40000:
        r = f.poll()
        if r > 0:
            take = min(r, 40000 - got)
            h.update(f.chunk[:take])
            got += take
    f.close()
    etag = f.etag
    f2 = fetch.Fetcher(_url("/blob.bin"))
    f2.start(40000, 150000, validator=etag)
    _run(f2, h)
    mptest.eq(f2.status, 206)
    mptest.eq(f2.total, 150000)
    mptest.eq(f2.pos, 150000)
    mptest.eq(_hex(h), _sha("blob.bin"))


def _download_resuming(url, limit, max_tries=200):
    """Keep resuming after every dropped connection; returns (hash, tries)."""
    h = hashlib.sha256()
    pos, etag, tries = 0, None, 0
    while True:
        tries += 1
        mptest.true(tries < max_tries, "too many tries")
        f = fetch.Fetcher(url)
        f.start(pos, limit, validator=etag)
        try:
            _run(f, h)
            return h, tries
        except fetch.FetchError as e:
            mptest.eq(e.code, fetch.E_CLOSED, e)
            mptest.true(f.pos >= pos)
            pos, etag = f.pos, f.etag


def test_dropped_at_random_offsets_many_times_completes():
    h, tries = _download_resuming(_url("/blob.bin?droprand=7:500:20000"), 150000)
    mptest.eq(_hex(h), _sha("blob.bin"))
    mptest.true(tries >= 10, "drops exercised", tries)
    print("resumed", tries - 1, "times")


def test_server_ignoring_range_skips_to_offset():
    h = hashlib.sha256()
    with open(mptest.data_path("www/blob.bin"), "rb") as src:
        b = bytearray(1000)
        for _ in range(100):
            src.readinto(b)
            h.update(b)
    f = fetch.Fetcher(_url("/blob.bin?norange=1"))
    f.start(100000, 150000)
    n = _run(f, h)
    mptest.eq(f.status, 200)
    mptest.eq(n, 50000)
    mptest.eq(_hex(h), _sha("blob.bin"))


def test_server_ignoring_range_and_drops_still_completes():
    h, tries = _download_resuming(_url("/blob.bin?norange=1&droprand=5:10000:170000"), 150000)
    mptest.eq(_hex(h), _sha("blob.bin"))
    mptest.true(tries >= 3, tries)
    print("ignored Range, resumed", tries - 1, "times")


def test_changed_file_restarts_from_zero():
    # If-Range with a stale validator: the server answers 200 with the whole
    # (new) file, the client says RESTART and delivers from byte 0
    f = fetch.Fetcher(_url("/small.bin"))
    f.start(1000, 3000, validator='"stale"')
    seen_restart = False
    h = hashlib.sha256()
    while True:
        r = f.poll()
        if r == fetch.RESTART:
            seen_restart = True
            mptest.eq(f.pos, 0)
        elif r > 0:
            mptest.true(seen_restart, "data before RESTART")
            h.update(f.chunk)
        elif r == fetch.DONE:
            break
    mptest.true(seen_restart)
    mptest.eq(_hex(h), _sha("small.bin"))


def test_more_bytes_than_declared_are_not_delivered():
    h = hashlib.sha256()
    f = fetch.Fetcher(_url("/small.bin?extra=5000"))
    f.start(0, 3000)
    n = _run(f, h)
    mptest.eq(n, 3000)
    mptest.eq(_hex(h), _sha("small.bin"))


def test_declared_length_above_limit_rejected_before_data():
    f = fetch.Fetcher(_url("/blob.bin"))
    f.start(0, 100000)
    e = mptest.raises(fetch.FetchError, _run, f)
    mptest.eq(e.code, fetch.E_TOO_BIG)
    mptest.eq(f.pos, 0)


def test_endless_data_bounded_by_limit_set_midway():
    # the server lies (Content-Length 10x too big, then would send forever):
    # the caller tightens the bound once the image header says the size
    f = fetch.Fetcher(_url("/blob.bin?cl=1350000"))
    f.start(0, 2000000)
    got = 0
    while got < 2000:
        r = f.poll()
        if r > 0:
            got += r
    e = mptest.raises(fetch.FetchError, f.set_limit, 150000)
    mptest.eq(e.code, fetch.E_TOO_BIG)


def test_limit_enforced_on_bytes_without_length():
    f = fetch.Fetcher(_url("/blob.bin"))
    f.start(0, 2000000)
    got = 0
    while got < 5000:
        r = f.poll()
        if r > 0:
            got += r
    f._end = None  # as if the server had sent no Content-Length
    f.limit = 10000
    e = mptest.raises(fetch.FetchError, _run, f)
    mptest.eq(e.code, fetch.E_TOO_BIG)
    mptest.true(f.pos <= 10000, f.pos)


def test_short_body_is_closed_error_with_position():
    f = fetch.Fetcher(_url("/small.bin?cl=100"))
    f.start(0, 5000)
    e = mptest.raises(fetch.FetchError, _run, f)
    mptest.eq(e.code, fetch.E_CLOSED)
    mptest.eq(f.pos, 3000)


def test_stall_times_out_in_virtual_time_then_resumes():
    clk = Clock()
    f = fetch.Fetcher(_url("/blob.bin?stall=4&stall_at=20000"), clock=clk, timeout_ms=5000)
    f.start(0, 150000)
    for _ in range(1000000):
        r = f.poll()
        if f.pos >= 20000:
            break
        if r == 0:
            time.sleep_ms(1)
    mptest.eq(f.pos, 20000)
    clk.t += 4000
    mptest.eq(f.poll(), 0)  # quiet but within the timeout
    clk.t += 1001
    e = mptest.raises(fetch.FetchError, f.poll)
    mptest.eq(e.code, fetch.E_TIMEOUT)
    # resume where it stopped
    f2 = fetch.Fetcher(_url("/blob.bin"))
    f2.start(20000, 150000, validator=f.etag)
    mptest.eq(_run(f2), 130000)


def test_stalled_header_times_out():
    clk = Clock()
    f = fetch.Fetcher(_url("/small.bin?stall_head=2"), clock=clk, timeout_ms=1000)
    f.start(0, 3000)
    for _ in range(20):
        mptest.eq(f.poll(), 0)
    clk.t += 1001
    e = mptest.raises(fetch.FetchError, f.poll)
    mptest.eq(e.code, fetch.E_TIMEOUT)


def test_http_errors_have_codes():
    f = fetch.Fetcher(_url("/nope.bin"))
    f.start(0, 1000)
    e = mptest.raises(fetch.FetchError, _run, f)
    mptest.eq((e.code, e.detail), (fetch.E_HTTP, 404))
    f = fetch.Fetcher(_url("/small.bin"))
    f.start(3000, 5000)
    e = mptest.raises(fetch.FetchError, _run, f)
    mptest.eq(e.code, fetch.E_RANGE)


def test_redirect_followed_and_loop_stopped():
    h = hashlib.sha256()
    f = fetch.Fetcher(_url("/x?redirect=/small.bin"))
    f.start(0, 3000)
    _run(f, h)
    mptest.eq(_hex(h), _sha("small.bin"))
    f = fetch.Fetcher(_url("/loop?redirect=/loop?redirect=/small.bin"), max_redirects=0)
    f.start(0, 3000)
    e = mptest.raises(fetch.FetchError, _run, f)
    mptest.eq(e.code, fetch.E_REDIRECT)


def test_connection_refused():
    f = fetch.Fetcher("http://127.0.0.1:1/x")
    e = None
    try:
        f.start(0, 10)
        _run(f)
    except fetch.FetchError as err:
        e = err
    mptest.true(e is not None and e.code == fetch.E_CONNECT, e)


def test_bad_urls_rejected():
    for u in ("ftp://h/x", "http://", "http://h:99999/x", "http://h:x/", "http://u@h/x",
              "http://h/a b", None, "https://[::1/x"):
        e = mptest.raises(fetch.FetchError, fetch.Fetcher, u)
        mptest.eq(e.code, fetch.E_URL, u)
    mptest.eq(fetch.parse_url("https://[::1]:8443/a?b"), (True, "::1", 8443, "/a?b"))
    mptest.eq(fetch.parse_url("http://example.com"), (False, "example.com", 80, "/"))


def test_https_download_and_resume():
    h = hashlib.sha256()
    f = fetch.Fetcher(_url("/blob.bin?drop=60000", tls=True), cadata=_ca())
    f.start(0, 150000)
    e = mptest.raises(fetch.FetchError, _run, f, h)
    mptest.eq(e.code, fetch.E_CLOSED)
    mptest.eq(f.pos, 60000)
    f2 = fetch.Fetcher(_url("/blob.bin", tls=True), cadata=_ca())
    f2.start(60000, 150000, validator=f.etag)
    _run(f2, h)
    mptest.eq(f2.status, 206)
    mptest.eq(_hex(h), _sha("blob.bin"))


def test_poll_before_start_is_an_error():
    f = fetch.Fetcher(_url("/small.bin"))
    e = mptest.raises(fetch.FetchError, f.poll)
    mptest.eq(e.code, fetch.E_IO)


# ---- HTTPS verification and redirect origins (issue 13.1) --------------------------

def _ca():
    with open(mptest.data_path("ca.der"), "rb") as f:
        return f.read()


def _tls_url(which, host="localhost", path="/small.bin"):
    return "https://%s:%d%s" % (host, _port(which), path)


def _tls_fail(url, ca):
    f = fetch.Fetcher(url, cadata=ca)
    f.start(0, 3000)
    for _ in range(200000):
        try:
            r = f.poll()
        except fetch.FetchError as e:
            return e
        if r == fetch.DONE:
            raise AssertionError("download accepted from %s" % url)
        if r == 0:
            time.sleep_ms(1)
    raise AssertionError("no verdict")


def test_https_verifies_chain_and_host_name():
    ca = _ca()
    f = fetch.Fetcher(_tls_url("tls_port"), cadata=ca)
    f.start(0, 3000)
    h = hashlib.sha256()
    _run(f, h)
    mptest.eq(_hex(h), _sha("small.bin"))
    for which, host in (("bad_tls_port", "localhost"),          # self-signed, expired, other name
                        ("wrongname_tls_port", "localhost")):   # our CA, but for evil.example
        e = _tls_fail(_tls_url(which, host), ca)
        mptest.eq(e.code, fetch.E_TLS, which)
        mptest.true("not trusted for localhost" in str(e), which, e)
    e = _tls_fail(_tls_url("tls_port"), None)                  # no CA configured: fail closed
    mptest.true(e.code == fetch.E_TLS and "no CA" in str(e), e)


def test_redirect_may_not_leave_the_allowed_origins():
    # a redirect to another port (or host, or scheme) is refused by default
    other = "http://127.0.0.1:%d/small.bin" % _port("tls_port")
    f = fetch.Fetcher(_url("/small.bin?redirect=" + other))
    f.start(0, 3000)
    e = mptest.raises(fetch.FetchError, _run, f)
    mptest.eq(e.code, fetch.E_REDIRECT)
    mptest.true("not allowed" in str(e), e)
    # the operator may allow another origin
    there = "http://localhost:%d/small.bin" % _port()
    f = fetch.Fetcher(_url("/small.bin?redirect=" + there),
                      origins=((False, "127.0.0.1", _port()), (False, "localhost", _port())))
    f.start(0, 3000)
    h = hashlib.sha256()
    _run(f, h)
    mptest.eq(_hex(h), _sha("small.bin"))


def test_206_with_another_validator_is_refused_as_changed():
    # a server that ignores If-Range answers 206 for a file whose validator is
    # not the one resumed from: those bytes belong to another file
    f = fetch.Fetcher(_url("/small.bin?ignore_ifrange=1"))
    f.start(1000, 3000, validator='"stale"')
    e = mptest.raises(fetch.FetchError, _run, f)
    mptest.eq(e.code, fetch.E_CHANGED)
    mptest.true('"stale"' in str(e), e)
