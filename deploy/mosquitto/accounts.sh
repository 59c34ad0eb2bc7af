#!/usr/bin/env bash
# Create broker accounts: one per station / outlet / HJ 212 MN from the registries,
# one per aqpipe service. Prints each new password once (store it in the device or in
# the service's secret file); existing accounts are kept.
#   deploy/mosquitto/accounts.sh /etc/aqpipe /etc/mosquitto/aqpipe.passwd
set -euo pipefail
registry=${1:-deploy/config}
passwd=${2:-/etc/mosquitto/aqpipe.passwd}
touch "$passwd"
chmod 600 "$passwd"
ids=$(python3 - "$registry" <<'PY'
import sys, tomllib, pathlib
d = pathlib.Path(sys.argv[1])
for name, key in (("stations.toml", "station"), ("outlets.toml", "outlet")):
    p = d / name
    if p.exists():
        for item in tomllib.loads(p.read_text()).get(key, []):
            print(item["id"])
            if item.get("mn"):
                print(item["mn"])
PY
)
for user in $ids aqpipe-ingest aqpipe-aggregator aqpipe-alerts aqpipe-hj212-gateway aqpipe-viewer; do
  if grep -q "^${user}:" "$passwd"; then continue; fi
  pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  mosquitto_passwd -b "$passwd" "$user" "$pw"
  echo "$user $pw"
done
