#!/usr/bin/env bash
# Render an HTML file in headless Chromium and save a PNG screenshot of it.
# Usage: scripts/screenshot.sh PAGE.html OUT.png [WIDTH HEIGHT]   (default 1280 x 4000 pixels)
# Chromium loads only the local file: background networking, updates and sync are off, and a
# fresh profile folder is used and removed afterwards.
set -euo pipefail

if [ "$#" -lt 2 ] || [ "$#" -gt 4 ]; then
    echo "usage: $0 PAGE.html OUT.png [WIDTH HEIGHT]" >&2
    exit 2
fi
page=$1
out=$2
width=${3:-1280}
height=${4:-4000}
chromium=${CHROMIUM:-/usr/bin/chromium}

if [ ! -f "$page" ]; then
    echo "screenshot: $page: file not found" >&2
    exit 3
fi
if [ ! -x "$chromium" ]; then
    echo "screenshot: $chromium not found; run scripts/setup.sh as root or install Debian's chromium" >&2
    exit 3
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
page_url="file://$(realpath "$page")"
out_path=$(realpath -m "$out")
# Chromium prints harmless D-Bus and GPU messages on a machine without a desktop session.
timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$profile" --window-size="$width,$height" --screenshot="$out_path" "$page_url" \
    >"$profile/chromium.log" 2>&1 || {
    echo "screenshot: chromium failed; its output:" >&2
    cat "$profile/chromium.log" >&2
    exit 1
}
if [ ! -s "$out_path" ]; then
    echo "screenshot: chromium wrote no image to $out_path" >&2
    exit 1
fi
echo "screenshot written to $out"
