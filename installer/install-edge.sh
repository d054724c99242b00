#!/usr/bin/env bash
# Installs a patron-edge binary on a store machine as a systemd service.
#
#   sudo installer/install-edge.sh --binary target/release/patron-edge --store-id S001
#
# Creates the patron user, /etc/patron/edge.toml (from the binary's example, with the
# store id set) unless it exists, /var/lib/patron-edge (0700), the key directory beside
# it /var/lib/patron-edge.keys (0700: keys never sit in the data directory, so a copy
# of it reveals no personal data), and patron-edge.service.
# Re-running upgrades the binary and restarts the service; configuration and data are
# kept. Enrolling with the hub is one command afterwards (installer/README.md).
set -euo pipefail

binary=""
store_id=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --store-id) store_id="$2"; shift 2 ;;
    *) echo "usage: $0 --binary PATH --store-id ID" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "--binary must name an executable patron-edge" >&2; exit 2; }
case "$store_id" in
  ""|*[!A-Za-z0-9_-]*) echo "--store-id must be 1-16 of A-Z a-z 0-9 - _" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 2; }

id patron >/dev/null 2>&1 || useradd --system --home-dir /var/lib/patron-edge --shell /usr/sbin/nologin patron
install -d -m 0700 -o patron -g patron /var/lib/patron-edge
install -d -m 0700 -o patron -g patron /var/lib/patron-edge.keys
install -d -m 0755 /etc/patron
install -m 0755 "$binary" /usr/local/bin/patron-edge.new
mv /usr/local/bin/patron-edge.new /usr/local/bin/patron-edge

if [ ! -f /etc/patron/edge.toml ]; then
  /usr/local/bin/patron-edge example-config | sed "s/^store_id = .*/store_id = \"$store_id\"/" > /etc/patron/edge.toml
  chmod 0644 /etc/patron/edge.toml
fi

cat > /etc/systemd/system/patron-edge.service <<'UNIT'
[Unit]
Description=Patron store edge node
After=network.target

[Service]
User=patron
ExecStart=/usr/local/bin/patron-edge serve
Restart=always
RestartSec=1
# The edge answers only after fsync; give it time to finish in-flight requests (it
# drains for up to 30 s).
TimeoutStopSec=45
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=/var/lib/patron-edge /var/lib/patron-edge.keys

[Install]
WantedBy=multi-user.target
UNIT

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable patron-edge.service
  systemctl restart patron-edge.service
fi
echo "patron-edge installed for store $store_id."
echo "Create a lane token with: sudo -u patron patron-edge lane add lane-01"
