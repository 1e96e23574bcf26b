#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ headers (ORT API 21) from Debian trixie's libonnxruntime-dev
# without touching the system's apt configuration: a private apt setup (own sources, lists,
# cache, empty dpkg status), `apt-get download`, `dpkg -x`.
# The mirror URI is read from this machine's own apt sources; no host name lives in the repo.
# Usage: fetch_ort_headers.sh DEST   -> headers end up in DEST/include/onnxruntime/
set -euo pipefail
dest=${1:?usage: fetch_ort_headers.sh DEST}
pkg=${QEXPORT_ORT_DEV_PACKAGE:-libonnxruntime-dev}
suite=${QEXPORT_ORT_DEV_SUITE:-trixie}

if [ -f "$dest/include/onnxruntime/onnxruntime_c_api.h" ]; then
  echo "$dest/include/onnxruntime"; exit 0
fi
for tool in apt-get dpkg; do
  command -v "$tool" >/dev/null || {
    echo "fetch_ort_headers: '$tool' not found. Set ORT_INCLUDE_DIR to a folder holding onnxruntime_c_api.h (from ONNX Runtime's release archive or your distribution's onnxruntime dev package)." >&2
    exit 2; }
done

# First Debian archive URI configured on this machine (deb822 or one-line format).
uri=""
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  case "$f" in
    *.sources) cand=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f") ;;
    *) cand=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' "$f") ;;
  esac
  for u in $cand; do
    case "$u" in *debian-security*|*security.*) continue ;; */debian|*/debian/) uri=${u%/}; break 2 ;; esac
  done
done
if [ -z "$uri" ]; then
  echo "fetch_ort_headers: no Debian mirror found in /etc/apt sources. Set ORT_INCLUDE_DIR to a folder holding onnxruntime_c_api.h." >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/sources.list.d" "$work/etc/preferences.d" "$work/pkg"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
signed=""
[ -f "$keyring" ] && signed="Signed-By: $keyring"
cat > "$work/etc/sources.list.d/qexport.sources" <<SRC
Types: deb
URIs: $uri
Suites: $suite
Components: main
$signed
SRC
: > "$work/etc/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/etc/sources.list"
      -o "Dir::Etc::SourceParts=$work/etc/sources.list.d"
      -o "Dir::Etc::PreferencesParts=$work/etc/preferences.d"
      -o "Dir::State::Lists=$work/lists"
      -o "Dir::Cache=$work/cache"
      -o "Dir::State::status=/dev/null"
      -o "APT::Architecture=$(dpkg --print-architecture)"
      -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
apt-get "${opts[@]}" -qq update >&2
(cd "$work/pkg" && apt-get "${opts[@]}" -qq download "$pkg" >&2)
deb=$(ls "$work"/pkg/*.deb | head -n 1)
dpkg -x "$deb" "$work/x"
hdr=$(dirname "$(find "$work/x" -name onnxruntime_c_api.h | head -n 1)")
[ -f "$hdr/onnxruntime_c_api.h" ] || { echo "fetch_ort_headers: $pkg holds no onnxruntime_c_api.h" >&2; exit 2; }
# Install atomically: a concurrent build either sees no headers or all of them.
mkdir -p "$dest/include"
stage=$(mktemp -d "$dest/include/.onnxruntime.XXXXXX")
cp "$hdr"/*.h "$stage/"
chmod 755 "$stage"
if ! mv -T "$stage" "$dest/include/onnxruntime" 2>/dev/null; then
  rm -rf "$stage"  # another build installed them first
fi
[ -f "$dest/include/onnxruntime/onnxruntime_c_api.h" ] || { echo "fetch_ort_headers: could not install into $dest" >&2; exit 2; }
echo "$dest/include/onnxruntime"
