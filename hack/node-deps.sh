#!/usr/bin/env bash
# Install the Debian packages the real node needs (hack/realnode.sh), when they are missing.
# Needs root and apt-get; elsewhere it only says what is missing (the cluster then runs with
# kwok nodes only).
set -euo pipefail
PACKAGES=(runc containernetworking-plugins iptables ipset conntrack socat iproute2)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed" || missing+=("${p}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "node-deps: missing ${missing[*]} (not root or no apt-get): the cluster will have no real node" >&2
  exit 0
fi
echo "node-deps: apt-get install ${missing[*]}" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
