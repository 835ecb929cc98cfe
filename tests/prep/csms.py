"""A CSMS for the OCPP tests: the pinned `ocpp` package (v16 ChargePoint, the
central-system side) on the pinned `websockets` server, on 127.0.0.1, in a
thread. Every CALL from the board is validated by `ocpp` against the OCA
JSON schemas; a violation is recorded in `errors` (and answered with a
CALLERROR, as the package does) so that the test fails at teardown.

    with CSMS(boot="Accepted", interval=2) as cs:
        ... VBoard(..., ocpp=cs.url) ...
        cs.wait(lambda: cs.calls("StatusNotification"))
        cs.call("vb1", call.RemoteStartTransaction(id_tag="T1"))
"""
import asyncio
import datetime
import json
import threading
import time

from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as _CP
from ocpp.v16 import call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import serve

from tools.netutil import free_port


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class _Station(_CP):
    def __init__(self, cid, conn, cs):
        super().__init__(cid, conn, response_timeout=10)
        self.cs = cs

    async def route_message(self, raw):
        try:
            m = json.loads(raw)
            if isinstance(m, list) and m and m[0] == 2:
                self.cs._record(self.id, m[2], m[3])
        except (ValueError, IndexError):
            self.cs.errors.append("unparseable frame %r" % raw)
        return await super().route_message(raw)

    async def _handle_call(self, msg):
        try:
            return await super()._handle_call(msg)
        except OCPPError as e:
            self.cs.errors.append("%s: %s %s" % (msg.action, type(e).__name__, e))
            raise

    @on(Action.boot_notification)
    def _boot(self, charge_point_vendor, charge_point_model, **kw):
        return call_result.BootNotification(current_time=_now(), interval=self.cs.interval,
                                            status=self.cs.boot)

    @on(Action.heartbeat)
    def _hb(self):
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    def _status(self, connector_id, error_code, status, **kw):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def _authorize(self, id_tag):
        return call_result.Authorize(id_tag_info={"status": self.cs.auth.get(id_tag, "Invalid")})

    @on(Action.start_transaction)
    def _start(self, connector_id, id_tag, meter_start, timestamp, **kw):
        self.cs.next_tx += 1
        self.cs.started.append((self.id, id_tag, self.cs.next_tx))
        return call_result.StartTransaction(
            transaction_id=self.cs.next_tx,
            id_tag_info={"status": self.cs.auth.get(id_tag, "Accepted")})

    @on(Action.stop_transaction)
    def _stop(self, meter_stop, timestamp, transaction_id, **kw):
        if self.cs.fail_stops > 0:
            self.cs.fail_stops -= 1
            raise RuntimeError("CSMS refuses this StopTransaction (test)")   # -> CALLERROR
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def _mv(self, connector_id, meter_value, **kw):
        return call_result.MeterValues()

    @on(Action.firmware_status_notification)
    def _fw(self, status, **kw):
        return call_result.FirmwareStatusNotification()

    @on(Action.signed_firmware_status_notification)
    def _sfw(self, status, request_id, **kw):
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.security_event_notification)
    def _sec(self, type, timestamp, **kw):
        return call_result.SecurityEventNotification()


class CSMS:
    def __init__(self, boot="Accepted", interval=300, port=None, ssl=None):
        self.boot = boot
        self.ssl = ssl              # an ssl.SSLContext: wss:// (may be replaced between stop and start)
        self.refuse = None          # an HTTP status (e.g. 401): the upgrade is refused with it
        self.interval = interval
        self.auth = {}              # idTag -> status (Authorize; StartTransaction default Accepted)
        self.port = port or free_port()
        self.url = "%s://127.0.0.1:%d/ocpp" % ("wss" if ssl else "ws", self.port)
        self.log = []               # (t, charge box id, action, payload) of every CALL received
        self.errors = []            # schema violations and protocol problems
        self.stations = {}
        self.connects = []          # (t, charge box id, subprotocol, Authorization header)
        self.refused = []           # times of upgrades refused (refuse)
        self.next_tx = 100
        self.fail_stops = 0         # answer this many StopTransactions with a CALLERROR
        self.started = []           # (charge box id, idTag, transactionId) assigned
        self._loop = None
        self._thread = None
        self._cond = threading.Condition()

    # ---- server ---------------------------------------------------------------
    def start(self):
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("CSMS did not start")
        return self

    def _run(self, ready):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main(ready))

    async def _main(self, ready):
        self._stop = asyncio.Event()

        def sel(conn, offered):
            return "ocpp1.6" if "ocpp1.6" in offered else None
        async with serve(self._on_connect, "127.0.0.1", self.port, select_subprotocol=sel,
                         ping_interval=None, ssl=self.ssl, process_request=self._check):
            ready.set()
            await self._stop.wait()

    def _check(self, conn, request):
        if self.refuse:
            with self._cond:
                self.refused.append(time.time())
                self._cond.notify_all()
            return conn.respond(self.refuse, "refused by the test\n")
        return None

    async def _on_connect(self, ws):
        cid = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        with self._cond:
            self.connects.append((time.time(), cid, ws.subprotocol,
                                  ws.request.headers.get("Authorization")))
            self._cond.notify_all()
        if ws.subprotocol != "ocpp1.6":
            self.errors.append("connection without the ocpp1.6 subprotocol")
            return
        st = _Station(cid, ws, self)
        self.stations[cid] = st
        try:
            await st.start()
        except Exception:
            pass

    def stop(self):
        """Shut the CSMS down (connections closed): the board goes offline."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
            self._loop = None
        self.stations = {}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- test API -----------------------------------------------------------------
    def _record(self, cid, action, payload):
        with self._cond:
            self.log.append((time.time(), cid, action, payload))
            self._cond.notify_all()

    def tx_id(self, tag, timeout=20):
        """The transactionId given to the last StartTransaction with idTag `tag`."""
        return self.wait(lambda: [t for (_, g, t) in self.started if g == tag], timeout,
                         "a transaction for %s" % tag)[-1]

    def calls(self, action=None, cid=None):
        with self._cond:
            return [p for (_, c, a, p) in self.log
                    if (action is None or a == action) and (cid is None or c == cid)]

    def actions(self, cid=None):
        with self._cond:
            return [a for (_, c, a, _) in self.log if cid is None or c == cid]

    def wait(self, cond, timeout=20, what=None):
        end = time.time() + timeout
        with self._cond:
            while True:
                self._cond.release()
                try:
                    r = cond()
                finally:
                    self._cond.acquire()
                if r:
                    return r
                left = end - time.time()
                if left <= 0:
                    raise AssertionError("CSMS: timed out waiting for %s; log: %s; errors: %s" % (
                        what or cond, [(a, p) for (_, _, a, p) in self.log[-12:]], self.errors))
                self._cond.wait(min(left, 0.2))

    def raw(self, cid, frame, timeout=15):
        """Send a raw frame (a list, JSON-encoded here, no schema check) and
        return the board's answer as the list it sent back."""
        st = self.stations[cid]
        uid = frame[1]

        async def go():
            await st._send(json.dumps(frame))
            r = await st._get_specific_response(uid, timeout)
            return json.loads(r.to_json())
        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout + 1)

    def call(self, cid, payload, timeout=15):
        """Send a CALL to the board; the (schema-validated) answer, or raise."""
        st = self.stations[cid]
        fut = asyncio.run_coroutine_threadsafe(st.call(payload, suppress=False), self._loop)
        return fut.result(timeout)
