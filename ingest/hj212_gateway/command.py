"""The `aqpipe hj212-gateway` subcommand: options over [hj212_gateway], run until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

from pydantic import ValidationError

from aqpipe.cliutil import AddCommon, load_or_exit
from aqpipe.config import Config, Hj212GatewayConfig, MqttConfig, config_error_from
from aqpipe.errors import ConfigError
from aqpipe.ops_http import OpsServer
from aqpipe.registry import Registry
from ingest.hj212_gateway.server import Hj212Gateway

log = logging.getLogger("aqpipe.hj212_gateway")


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser(
        "hj212-gateway", help="accept HJ 212 data loggers over TCP and publish their frames to MQTT",
        description="TCP server for HJ 212-2017 and HJ 212-2025 data loggers: lets through only loggers "
                    "whose MN is in the registry and whose PW matches the registry's secrets file "
                    "(hj212_secrets_file; refused frames are counted in "
                    "aqpipe_hj212_gateway_rejected_total and the connection is closed after "
                    "max_auth_failures), checks each frame (length, CRC, structure; SM4-encrypted 2025 "
                    "frames with the logger's key), publishes it at QoS 1 on aq/v1/hj212/{MN} and, once "
                    "the broker has acknowledged it, sends the reply the frame asks for (9014 data reply; "
                    "9013 for the 9015 heartbeat, answered without publishing). Optional TLS "
                    "(tls_cert/tls_key). Defaults from [hj212_gateway] in aqpipe.toml "
                    "(AQPIPE_HJ212_GATEWAY__*). SIGTERM/Ctrl-C: stop accepting, finish publishes and "
                    "replies, exit 0. See ingest/README-hj212.md.")
    add_common(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:9212; "
                                                         "0.0.0.0:9212 for loggers on the network)")
    p.add_argument("--max-connections", type=int, metavar="N", help="open connections at most (default 1000)")
    p.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                   help="close a connection silent this long (default 300)")
    p.add_argument("--max-frame-bytes", type=int, metavar="N",
                   help="largest frame accepted, ## to CRLF (default and maximum 10011, the standard's)")
    p.set_defaults(func=cmd_gateway)


def gateway_config(cfg: Config, args: argparse.Namespace) -> Hj212GatewayConfig:
    """[hj212_gateway] with the command-line options on top, validated like the file."""
    over = {key: value for key, value in (
        ("listen", args.listen), ("max_connections", args.max_connections),
        ("idle_timeout_s", args.idle_timeout), ("max_frame_bytes", args.max_frame_bytes)) if value is not None}
    return Hj212GatewayConfig.model_validate({**cfg.hj212_gateway.model_dump(), **over})


def cmd_gateway(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args.config)
    try:
        gw_cfg = gateway_config(cfg, args)
    except ValidationError as e:
        print(f"aqpipe: {config_error_from(e)}", file=sys.stderr)
        return 2
    try:
        registry = Registry.load(cfg.registry_path)
    except ConfigError as e:
        print(f"aqpipe: {e}", file=sys.stderr)
        return 2
    ops = None
    if gw_cfg.metrics_port:
        try:
            ops = OpsServer(cfg.metrics.host, gw_cfg.metrics_port)
        except OSError as e:
            log.error("event=metrics_listen_failed address=%s:%d error=%r", cfg.metrics.host, gw_cfg.metrics_port, str(e))
            return 1
    try:
        return asyncio.run(_main(gw_cfg, cfg.mqtt, cfg.mqtt.topic_prefix, registry, ops))
    finally:
        if ops is not None:
            ops.close()


async def _main(cfg: Hj212GatewayConfig, mqtt: MqttConfig, prefix: str, registry: Registry,
                ops: OpsServer | None = None) -> int:
    gateway = Hj212Gateway(cfg, mqtt, prefix, registry)
    if ops is not None:
        ops.add_check(gateway.ready)  # /readyz: 503 until listening and connected to the broker
    try:
        await gateway.start()
    except (OSError, ssl.SSLError) as e:
        log.error("event=listen_failed listen=%s error=%r", cfg.listen, str(e))
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("event=stopping (signal) open=%d pending=%d", len(gateway.connections), gateway.publisher.pending)
    await gateway.stop()
    return 0
