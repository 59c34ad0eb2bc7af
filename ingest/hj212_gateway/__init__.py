"""`aqpipe hj212-gateway`: HJ 212 data loggers over TCP -> MQTT `aq/v1/hj212/{mn}`.

Data loggers (数采仪) open a TCP connection to the platform and send HJ 212-2017
frames; most cannot speak MQTT. The gateway cuts frames out of the byte stream
(`FrameSplitter`: partial reads, several frames per read, garbage between frames,
resync on the next `##dddd`, buffer bounded by `max_frame_bytes`), checks framing,
length and CRC with the decoder's `parse_frame`, publishes each valid frame as
received (CRLF-terminated) at QoS 1, and only once the broker has acknowledged it
(PUBACK) answers the logger when the frame's Flag asks for it (bit 0): 9014 data
reply for uploads, 9013 notification reply for 1013. A logger that has its reply
may drop the data; one that has none sends it again (a repeated reading overwrites
itself in InfluxDB). Only loggers whose MN is in the registry and whose PW matches
the registry's secrets file get through (`access`: constant-time compare; refused
frames are counted, never published, and the connection closes after
max_auth_failures); the HJ 212-2025 heartbeat 9015 is answered here; encrypted 2025
frames are checked with the logger's SM4 key. Decoding into readings and dead
letters stay in `aqpipe ingest`: the gateway keeps no state. Optional TLS listener.

Invalid frames are counted and logged (never with PW) and the connection stays
open. Limits: connections, idle time, frame size, frames per connection awaiting
PUBACK (`window`, reading pauses) and publishes awaiting PUBACK overall
(`max_pending`), so a slow broker, a silent or half-open client or a flood of
bytes cannot grow memory.

Modules: `splitter` (frames out of the byte stream), `access` (MN and PW),
`replies` (which reply a frame asks for), `publisher` (paho on the event loop), `connection` (one logger),
`server` (`Hj212Gateway`), `metrics`, `command` (`aqpipe hj212-gateway`).
"""

from __future__ import annotations

from ingest.hj212_gateway.command import cmd_gateway, gateway_config, register
from ingest.hj212_gateway.metrics import (
    ACCEPTED,
    BYTES_IN,
    CONNECTIONS,
    DISCONNECTS,
    GARBAGE,
    INVALID,
    MQTT_CONNECTED,
    PENDING,
    PUBACK_SECONDS,
    PUBLISH_FAILED,
    PUBLISHED,
    REJECTED,
    REPLIES,
)
from ingest.hj212_gateway.publisher import PublishRefused
from ingest.hj212_gateway.replies import reply_command, reply_for
from ingest.hj212_gateway.server import Hj212Gateway, run_in_thread, split_listen, stop_in_thread
from ingest.hj212_gateway.splitter import Accepted, FrameSplitter, Rejected

__all__ = [
    "ACCEPTED", "BYTES_IN", "CONNECTIONS", "DISCONNECTS", "GARBAGE", "INVALID", "MQTT_CONNECTED", "PENDING",
    "PUBACK_SECONDS", "PUBLISHED", "PUBLISH_FAILED", "REJECTED", "REPLIES",
    "Accepted", "FrameSplitter", "Hj212Gateway", "PublishRefused", "Rejected",
    "cmd_gateway", "gateway_config", "register", "reply_command", "reply_for", "run_in_thread",
    "split_listen", "stop_in_thread",
]
