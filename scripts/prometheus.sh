#!/usr/bin/env bash
# prometheus.sh installs Debian's Prometheus server into .deps/prometheus/ (ignored by git), without
# root and without touching the system: the .deb is fetched with `apt-get download` and unpacked
# with `dpkg-deb -x`. The orchestrator's PrometheusObserver integration test runs this binary, and the
# metrics tests run its promtool (`promtool check metrics` on every role's /metrics).
# Idempotent: a stamp under .deps/stamps skips the step when it is done.
#
#   .deps/prometheus/usr/bin/prometheus     Prometheus 2.42 (Debian bookworm); tests read it from IPA_PROMETHEUS
#   .deps/prometheus/usr/bin/promtool       from the same package; tests find it next to IPA_PROMETHEUS
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPS=${DEPS:-$ROOT/.deps}
DL=$DEPS/downloads
STAMPS=$DEPS/stamps
OUT=$DEPS/prometheus
BIN=$OUT/usr/bin/prometheus
mkdir -p "$DL" "$STAMPS"

say() { printf '\033[1m[prometheus]\033[0m %s\n' "$*"; }
# As root, apt would drop to the _apt user, who cannot write into .deps: download as root.
APT_OPTS=()
[ "$(id -u)" != 0 ] || APT_OPTS=(-o APT::Sandbox::User=root)

say "Prometheus server from Debian (apt-get download + dpkg-deb -x, no root needed)"
if [ ! -f "$STAMPS/prometheus" ] || [ ! -x "$BIN" ]; then
	rm -f "$DL"/prometheus_*.deb
	if ! (cd "$DL" && apt-get "${APT_OPTS[@]}" download -qq prometheus); then
		# apt-get download needs a package list; a fresh machine may have none yet.
		if [ "$(id -u)" = 0 ]; then
			apt-get update -qq
			(cd "$DL" && apt-get "${APT_OPTS[@]}" download -qq prometheus)
		else
			echo "prometheus.sh: apt-get download prometheus failed; run 'sudo apt-get update' and retry" >&2
			exit 1
		fi
	fi
	deb=$(ls "$DL"/prometheus_*.deb)
	rm -rf "$OUT"
	dpkg-deb -x "$deb" "$OUT"
	[ -x "$BIN" ] || { echo "prometheus.sh: $deb has no usr/bin/prometheus" >&2; exit 1; }
	[ -x "$OUT/usr/bin/promtool" ] || { echo "prometheus.sh: $deb has no usr/bin/promtool" >&2; exit 1; }
	date -u +%FT%TZ >"$STAMPS/prometheus"
fi
say "ok: $BIN ($("$BIN" --version 2>&1 | head -n1))"
