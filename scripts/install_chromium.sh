#!/usr/bin/env bash
# make test: Debian's Chromium and ChromeDriver, for the test that opens curate's HTML reports in a real
# headless browser (tests/test_report_browser.py). Quick when both are there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install: Debian chromium chromium-driver"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
else
  echo "install: chromium missing: run as root 'apt-get install chromium chromium-driver'" \
       "(the browser test is skipped without it, except under CI)" >&2
fi
