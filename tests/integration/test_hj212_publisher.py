"""The gateway's MQTT publisher against a real Mosquitto: paho's connect runs in an
executor thread while the event loop goes on receiving frames; the two must not meet."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aqpipe.config import MqttConfig
from ingest.hj212_gateway.publisher import Publisher
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def test_a_frame_published_while_the_broker_connection_is_being_opened_is_acknowledged(mosquitto, unique):
    """A frame that arrives while paho's reconnect() runs in the executor (socket open,
    CONNECT not yet queued) used to be queued on the new socket ahead of the CONNECT:
    Mosquitto dropped the connection (paho: 'Unspecified error'). Here the executor is
    held at exactly that point until the loop has published."""
    published = threading.Event()
    disconnects: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        p = Publisher(MqttConfig(port=mosquitto.port), f"pub-{unique}", max_pending=10, loop=loop)
        opened = p.client.on_socket_open

        def hold_after_open(client, userdata, sock):  # runs in the executor thread, inside reconnect()
            opened(client, userdata, sock)
            if threading.current_thread() is not threading.main_thread():
                published.wait(5)

        p.client.on_socket_open = hold_after_open
        on_disconnect = p.client.on_disconnect
        p.client.on_disconnect = lambda c, u, f, rc, pr: (disconnects.append(str(rc)), on_disconnect(c, u, f, rc, pr))
        p.start()
        await loop.run_in_executor(None, lambda: wait_until(lambda: p.client.socket() is not None))
        await p.reserve()
        fut = p.publish(f"aq/v1/hj212/{unique}", b"frame")
        published.set()
        await asyncio.wait_for(fut, 10)  # PUBACK
        assert disconnects == []
        assert await p.stop(2)

    asyncio.run(scenario())
