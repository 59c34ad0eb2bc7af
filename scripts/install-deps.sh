#!/usr/bin/env bash
# Install what aqpipe needs on a Debian machine (as root): the servers it talks to
# (Mosquitto, InfluxDB, Alertmanager, VictoriaMetrics, Prometheus, PostgreSQL), the
# browser its page tests drive (Chromium)
# (started later by scripts/servers.py with their own config, never as system services)
# and Python's venv. Idempotent: installs only what is missing.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ]; }
have_cmd mosquitto /usr/sbin/mosquitto || need+=(mosquitto)
have_cmd mosquitto_pub /usr/bin/mosquitto_pub || need+=(mosquitto-clients)
have_cmd influxd /usr/bin/influxd || need+=(influxdb)
have_cmd prometheus-alertmanager /usr/bin/prometheus-alertmanager || need+=(prometheus-alertmanager)
have_cmd victoria-metrics /usr/bin/victoria-metrics || need+=(victoria-metrics)
have_cmd promtool /usr/bin/promtool || need+=(prometheus)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
have_cmd chromium /usr/bin/chromium || need+=(chromium)
have_cmd chromedriver /usr/bin/chromedriver || need+=(chromium-driver)
# A CJK font, so the browser tests' screenshots of the Chinese pages show text, not boxes.
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
have_cmd curl /usr/bin/curl || need+=(curl)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "aqpipe needs: ${need[*]} - run 'make deps' as root, or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # policy-rc.d keeps the packages' own system services from starting: aqpipe starts
  # these servers itself, on its own ports, with its own config and data dirs.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1; fi
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
fi
echo "system dependencies: ok (mosquitto, influxdb, prometheus-alertmanager, victoria-metrics, prometheus, postgresql, chromium, python3-venv)"
