"""The pinned amqtt broker as the tests run it (tests/prep/broker.py starts
`python -m tests.prep.amqtt_broker CONFIG.yaml` where mosquitto is absent).

Same as amqtt's own `amqtt -c CONFIG` with two work-arounds for amqtt
0.12.1, both seen with a fleet of stand-in devices (tests/test_rollout.py):

- it walks its subscription table across awaits (retained messages for a
  connecting client, broadcasts) while other clients' SUBSCRIBE or
  disconnect change it; the walk then fails with "dictionary changed size
  during iteration" and the connecting client is dropped without a word.
  The table is replaced by a dict whose iteration walks a copy.
- it waits a hard-coded 5 s for a client's PUBACK/PUBREC/PUBCOMP and then
  drops the QoS 1/2 message ("Timeout waiting for PUBACK"); mosquitto keeps
  it in flight. On a busy machine an ack can take longer, so these waits
  (futures awaited with timeout 5) get ACK_WAIT_S.
"""
import asyncio
import logging
import sys

from amqtt.broker import Broker
from amqtt.mqtt.protocol import handler
from amqtt.utils import read_yaml_config

ACK_WAIT_S = 120


class SnapshotDict(dict):
    """A dict whose iteration (keys, values, items) walks a copy."""

    def __iter__(self):
        return iter(list(dict.keys(self)))

    def keys(self):
        return list(dict.keys(self))

    def values(self):
        return list(dict.values(self))

    def items(self):
        return list(dict.items(self))


class _AckWaitAsyncio:
    """asyncio for amqtt's protocol handler, with the 5 s ack waits stretched."""

    def __getattr__(self, name):
        return getattr(asyncio, name)

    @staticmethod
    def wait_for(aw, timeout=None):
        if timeout == 5 and isinstance(aw, asyncio.Future):
            timeout = ACK_WAIT_S
        return asyncio.wait_for(aw, timeout)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m tests.prep.amqtt_broker CONFIG.yaml")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] :: %(levelname)s - %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    handler.asyncio = _AckWaitAsyncio()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    broker = Broker(read_yaml_config(argv[0]), loop=loop)
    broker._subscriptions = SnapshotDict(broker._subscriptions)
    loop.create_task(broker.start())
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        loop.run_until_complete(broker.shutdown())
    finally:
        loop.close()


if __name__ == "__main__":
    main()
