#!/usr/bin/env bash
# Optional real photos and captions for the demo and benchmarks (offline.md): Debian packages unpacked under
# .data/debian without installing them. Their absence is reported, never fatal: tests do not need them.
set -uo pipefail
cd "$(dirname "$0")/.."
root=.data/debian
mkdir -p "$root" .data/debs
for pkg in ${CURATE_DEBIAN_PHOTOS:-tuxpaint-stamps-default}; do
  [ -f "$root/.$pkg" ] && continue
  if ! command -v apt-get >/dev/null; then echo "note: no apt-get; $pkg not available" >&2; continue; fi
  if ! (cd .data/debs && apt-get download -qq "$pkg" >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1
    (cd .data/debs && apt-get download -qq "$pkg" >/dev/null 2>&1) || { echo "note: could not download $pkg" >&2; continue; }
  fi
  dpkg-deb -x .data/debs/${pkg}_*.deb "$root" && touch "$root/.$pkg" && echo "install: unpacked $pkg into $root"
  rm -f .data/debs/${pkg}_*.deb
done
exit 0
