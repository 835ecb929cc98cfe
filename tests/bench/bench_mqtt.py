# bench: heapsize=96K
# Worst Link.poll() duration while the broker is down (connection refused)
# and while it is stalled (accepts TCP, never reads or answers), with the
# link retrying as fast as its backoff allows (virtual time leaps over the
# delays) and the control loop publishing state/telemetry all along.
# Aim: the control loop's period (20 ms) stays under 50 ms -> poll < 5 ms.
import gc
import time
import socket
from benchlib import report
from firmware.mqtt import Link

N = 3000


def _stalled_server():
    # a listening socket nobody accepts from: the kernel completes the TCP
    # handshake, nothing is ever read - a stalled broker
    for port in range(18830, 18930):
        s = socket.socket()
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            s.listen(64)
            return s, port
        except OSError:
            s.close()
    raise OSError("no free port")


def run(port, label):
    gc.collect()
    m0 = gc.mem_alloc()
    link = Link({"host": "127.0.0.1", "port": port, "user": "u", "password": "p", "keepalive": 60},
                "bench", 0)
    gc.collect()
    mem = gc.mem_alloc() - m0
    now = 0
    worst = 0
    total = 0
    for i in range(N):
        if i % 10 == 0:
            link.publish("telemetry", {"voltage_v": 230.1, "current_a": 16.0, "n": i})
            link.publish("state", {"state": "C", "n": i}, retain=True)
        if link.state == "idle" and time.ticks_diff(link.retry_at, now) > 0:
            now = link.retry_at               # leap over the backoff delay
        elif link.state == "connack" and i % 50 == 49:
            now = time.ticks_add(now, 10000)  # let the CONNACK deadline pass
        else:
            now = time.ticks_add(now, 20)
        t0 = time.ticks_us()
        link.poll(now)
        dt = time.ticks_diff(time.ticks_us(), t0)
        total += dt
        if dt > worst:
            worst = dt
    link.close()
    report("mqtt poll max, broker %s" % label, worst / 1000, "ms", "< 5")
    report("mqtt poll mean, broker %s" % label, total / N / 1000, "ms", "")
    report("mqtt attempts, broker %s" % label, link.attempts, "", "")
    return mem


mem = run(1, "down")            # nothing listens on port 1: connection refused
srv, port = _stalled_server()
run(port, "stalled")
srv.close()
report("mqtt Link heap (buffers + objects)", mem, "bytes", "")
gc.collect()
report("heap in use with firmware.mqtt loaded", gc.mem_alloc(), "bytes", "96K total")
