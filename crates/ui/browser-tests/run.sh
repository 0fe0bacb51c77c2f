#!/usr/bin/env bash
# The activity page's browser tests: installs what they need if it is missing (Debian's
# chromium with apt-get, driven over the DevTools protocol, so no chromium-driver; Node.js 20
# or later; the npm packages of package-lock.json with `npm ci`), then runs them through cargo:
#   cargo test -p kubetrail --test ui_page browser -- --ignored
# Every run makes the README's picture of the page again from `kubetrail demo`'s data
# (docs/activity-page.png, so it never shows an older page); KUBETRAIL_UI_SCREENSHOT=FILE writes
# it elsewhere, and an empty value keeps it in the test's temp dir only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "browser tests: install ${need[*]} (apt-get) or run as root" >&2; exit 1; }
  echo "browser tests: installing ${need[*]} (Debian packages)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "browser tests: playwright-core needs Node.js 20 or later; this is $(node --version)" >&2
  exit 1
fi
(cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)

cd "$here/../../.."
export KUBETRAIL_UI_SCREENSHOT="${KUBETRAIL_UI_SCREENSHOT-$PWD/docs/activity-page.png}"
cargo test -p kubetrail --locked --test ui_page browser -- --ignored --nocapture
