#!/usr/bin/env bash
# Installs the Debian services the tests need, where they are missing: Prometheus (with
# promtool) and the Pushgateway. The test fixtures start them on loopback ports themselves;
# the packages' own system services are never started here.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
echo "installing ${missing[*]} (Debian packages) for the tests..."
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d 101 keeps the packages' post-install scripts from starting system daemons.
printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
$sudo chmod +x /usr/sbin/policy-rc.d
trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null
echo "installed: $(promtool --version 2>&1 | head -1)"
