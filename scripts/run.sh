#!/usr/bin/env bash
# `make run`: Mosquitto, InfluxDB and Alertmanager up on loopback (own config and data under ./run),
# the station simulator publishing, and aqpipe running in the foreground. Ctrl-C stops
# aqpipe cleanly (flush, ack, exit) and the simulator with it; the servers keep running
# (`make servers-down` stops them) so dashboards and queries still work.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-run}
export AQPIPE_CONFIG=${AQPIPE_CONFIG:-deploy/config/aqpipe.toml}
export AQPIPE_DATA_DIR=${AQPIPE_DATA_DIR:-$RUN_DIR/data}
export AQPIPE_ALERTS__ALERTMANAGER_URL=${AQPIPE_ALERTS__ALERTMANAGER_URL:-http://127.0.0.1:9093}
AQPIPE=.venv/bin/aqpipe

# Alertmanager with its own minimal config (run/alertmanager/alertmanager.yml: one receiver,
# nothing delivered outside): aqpipe's alerts show in its UI. deploy/alertmanager/ has the
# bureau's routing.
python3 scripts/servers.py up --dir "$RUN_DIR" mosquitto influxdb alertmanager
# The example HJ 212 secrets file (dummy keys) comes out of git world-readable; aqpipe warns
# about such a file, rightly, so make it private as an operator would.
chmod 600 deploy/config/hj212-secrets.toml

# The case desk (aqpipe web, inside aqpipe run): a demo inspector on first run, its password shown once.
users_file="$AQPIPE_DATA_DIR/web-users.toml"
desk_login="users in $users_file ($AQPIPE web user list; add: $AQPIPE web user add NAME --role inspector)"
if [ ! -e "$users_file" ]; then
  pw=$("$AQPIPE" web user add demo --role inspector 2>/dev/null | sed -n 's/^password (shown once): //p' || true)
  desk_login="user demo, password $pw  (shown once; new one: $AQPIPE web user passwd demo)"
fi

cat <<MSG

aqpipe is starting on a simulated feed: 20 ambient stations every 5 s (plus 24 h of
history), 3 stack outlets, 1% malformed messages. The coal outlet 91620503MA001-DA001
runs over its SO2 permit limit around the start (and both JSON outlets at their daily
load peaks): within a couple of minutes the alerts service fires StackExceedance and
opens an enforcement case. A status line every 5 s per service (ingest, aggregator,
alerts: firing, notified, cases). Ctrl-C to stop.

Where to look:
  InfluxDB   http://127.0.0.1:8086  database "aq": ambient, stack (readings),
             aqi_hourly, aqi_daily, stack_hourly (rollups, about a minute after start)
             curl -sG http://127.0.0.1:8086/query --data-urlencode db=aq \\
               --data-urlencode "q=SELECT last(pm25) FROM ambient GROUP BY station"
  Alerts     http://127.0.0.1:9093  (Alertmanager UI: StackExceedance, its case_url annotation)
  Cases      AQPIPE_DATA_DIR=$AQPIPE_DATA_DIR $AQPIPE cases list   (database $AQPIPE_DATA_DIR/cases.sqlite;
             each case_url opens in the case desk below)
  Metrics    http://127.0.0.1:9108/metrics
  Case desk  http://127.0.0.1:9120/cases   login: $desk_login
  Public     http://127.0.0.1:9120/aqi (city AQI), /disclosure (违法公示), /api/openapi.json (JSON API)
  Dead letters  $AQPIPE_DATA_DIR/deadletter/   (AQPIPE_DATA_DIR=$AQPIPE_DATA_DIR $AQPIPE deadletter list)
  Simulator log $RUN_DIR/simulate.log;  server logs in $RUN_DIR/*/
MSG

"$AQPIPE" run &
svc=$!
sim=
stop() { kill -TERM $svc $sim 2>/dev/null || true; }
trap stop INT TERM
# The simulator starts once aqpipe has subscribed, so not a reading of the feed is missed.
for _ in $(seq 1 100); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:9108/readyz', timeout=1)" 2>/dev/null && break
  kill -0 $svc 2>/dev/null || break
  sleep 0.2
done
"$AQPIPE" simulate --interval 5 --backfill-hours 24 --log-level WARNING > "$RUN_DIR/simulate.log" 2>&1 &
sim=$!
wait $svc || true
wait $svc 2>/dev/null || true
kill -TERM $sim 2>/dev/null || true
wait $sim 2>/dev/null || true
