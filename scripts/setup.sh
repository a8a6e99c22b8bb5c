#!/usr/bin/env bash
# Set up facekit on a fresh Debian/Ubuntu machine: system libraries, a virtual
# environment in .venv, and facekit with its extras. Safe to run again.
#   scripts/setup.sh            library + notebooks
#   scripts/setup.sh --test     also what the tests need (Chromium for the browser test)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_pkgs="libopenjp2-7"
[ $want_test = 1 ] && apt_pkgs="$apt_pkgs chromium fonts-dejavu-core"
if command -v apt-get >/dev/null; then
  missing=""
  for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
else
  echo "setup: no apt-get here; install OpenJPEG (libopenjp2) yourself, or use environment.yml with conda" >&2
fi

# pip without the noise of this machine's local-index warnings (exit status kept)
pipq() {
  set +e
  .venv/bin/python -m pip "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pipq install -q --upgrade pip
extras="notebooks"
[ $want_test = 1 ] && extras="dev"
pipq install -q -e ".[$extras]"
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (facekit)" >/dev/null
echo "setup: facekit installed in .venv ($(.venv/bin/python -c 'import facekit; print(facekit.__version__)'))"
