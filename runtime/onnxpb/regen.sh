#!/usr/bin/env bash
# regen.sh regenerates onnx.pb.go from onnx.proto (see doc.go).
#
#   runtime/onnxpb/regen.sh            regenerate from the committed onnx.proto
#   runtime/onnxpb/regen.sh --fetch    first refresh onnx.proto from Debian trixie's libonnx-dev
#
# Needs: apt-get (root or sudo) when protoc is missing or --fetch is given, and go.
# Makefile use:  onnxpb: ; runtime/onnxpb/regen.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MODULE=github.com/ipa-serving/ipa
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_VERSION=3.21.12 # Debian bookworm protobuf-compiler; other versions only change the header
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

fetch=0
case "${1:-}" in
--fetch) fetch=1 ;;
"") ;;
*) echo "usage: $0 [--fetch]" >&2; exit 2 ;;
esac

if [ "$fetch" = 1 ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# A private apt configuration reaching trixie with the mirror and key of the system's sources.
	mkdir -p "$tmp/lists/partial" "$tmp/parts" "$tmp/archives/partial"
	uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	signed=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' "$uri" "$signed" >"$tmp/parts/trixie.sources"
	apt_trixie() {
		apt-get -o Dir::State::Lists="$tmp/lists" -o Dir::Etc::SourceList=/dev/null \
			-o Dir::Etc::SourceParts="$tmp/parts" -o Dir::Cache::Archives="$tmp/archives" \
			-o APT::Sandbox::User=root \
			-o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false "$@"
	}
	echo "onnxpb: fetching libonnx-dev from Debian trixie"
	apt_trixie update -qq >/dev/null
	(cd "$tmp" && apt_trixie download -qq libonnx-dev)
	dpkg-deb -x "$tmp"/libonnx-dev_*.deb "$tmp/x"
	cp "$tmp/x/usr/include/onnx/onnx.proto" "$HERE/onnx.proto"
	echo "onnxpb: onnx.proto from $(basename "$tmp"/libonnx-dev_*.deb), sha256 $(sha256sum "$HERE/onnx.proto" | cut -d' ' -f1)"
fi

if ! command -v protoc >/dev/null; then
	echo "onnxpb: installing protobuf-compiler"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq protobuf-compiler >/dev/null
fi
v=$(protoc --version | awk '{print $2}')
[ "$v" = "$PROTOC_VERSION" ] || echo "onnxpb: warning: protoc $v, the committed file was made with $PROTOC_VERSION" >&2

GOBIN=$(go env GOPATH)/bin
if ! "$GOBIN/protoc-gen-go" --version 2>/dev/null | grep -q "${PROTOC_GEN_GO##*@}"; then
	echo "onnxpb: installing $PROTOC_GEN_GO"
	GOFLAGS= go install "$PROTOC_GEN_GO"
fi

cd "$HERE"
PATH=$GOBIN:$PATH protoc --go_out=. --go_opt=paths=source_relative \
	--go_opt=Monnx.proto=$MODULE/runtime/onnxpb onnx.proto
echo "onnxpb: wrote $HERE/onnx.pb.go ($(wc -c <onnx.pb.go) bytes)"
