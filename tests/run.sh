#!/usr/bin/env bash
# The test command: installs what the tests need (Debian packages when root, the
# package with its test extras), then runs the whole suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
DEB_PACKAGES=(openssl curl nginx slurm-wlm munge libslurm-dev gcc python3-venv lua5.1 systemd)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${DEB_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
exec python3 -m pytest "$@"
