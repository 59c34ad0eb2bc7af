"""Subcommand `aqpipe alerts`: registered by the CLI like aggregator/commands.py."""

from __future__ import annotations

import argparse

from alerts.service import AlertsService
from aqpipe.cliutil import AddCommon, load_or_exit
from aqpipe.runner import run_services


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser(
        "alerts", help="run the alerts service (exceedance alerts, enforcement cases, notifications)",
        description="Subscribe to aq/v1/derived/stack/+, aq/v1/derived/aqi/+ and aq/v1/status/+ with its own "
                    "persistent session (alerts.client_id); evaluate the rules (alerts.rules_file, default "
                    "alerts/rules.toml) and keep alert state and cases in the case database (cases.database_url, "
                    "default DATA_DIR/cases.sqlite); a message is acknowledged only after its effect is committed. "
                    "A firing stack exceedance opens or joins the case of its outlet and pollutant. Notifies "
                    "Alertmanager (alerts.alertmanager_url; firing alerts re-posted every alerts.resend_s), a signed "
                    "webhook (alerts.webhook_url + alerts.webhook_secret_file), MQTT aq/v1/alerts/{fingerprint} "
                    "(retained while firing) and InfluxDB alert_events. SIGTERM/Ctrl-C: finish, ack, exit 0. "
                    "See alerts/README.md.")
    add_common(p)
    p.set_defaults(func=cmd_alerts)


def cmd_alerts(args: argparse.Namespace) -> int:
    return run_services(load_or_exit(args.config), [("alerts", AlertsService)])
