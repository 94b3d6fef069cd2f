#!/bin/sh
# Installs the Debian packages mmm needs, only those that are missing.
# Idempotent and quiet when everything is there; uses sudo when not root.
PKGS="libmongoc-dev libbson-dev libyaml-dev liblmdb-dev libzstd-dev pkg-config zstd python3-pymongo gcc make"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's package lists can be empty or stale: update when an install fails.
$SUDO apt-get install -y -q $missing >/dev/null 2>&1 || {
	$SUDO apt-get update -q >/dev/null 2>&1
	$SUDO apt-get install -y -q $missing >/dev/null || { echo "deps: apt-get install$missing failed" >&2; exit 1; }
}
