#!/usr/bin/env bash
# Set up everything the project needs, idempotently: a second run installs nothing.
#   1. from Debian (when apt is available): the Fashion-MNIST IDX files (dataset-fashion-mnist)
#      and MariaDB's server binaries without its system service (mariadb-server-core and
#      mariadb-client-core), which the ML-Metadata-on-MySQL test starts on a temporary directory,
#      and chromium-headless-shell, with which the tests take screenshots of the HTML reports;
#   2. a Python 3.11 venv in .venv with every package pinned in requirements/lock.txt;
#   3. this project, installed editable (the `fmnist` command).
set -euo pipefail
cd "$(dirname "$0")/.."

DATASET_DIR=/usr/share/datasets/fashion-mnist
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}

missing=()
[ -e "$DATASET_DIR/train-images-idx3-ubyte.gz" ] || missing+=(dataset-fashion-mnist)
[ -x /usr/sbin/mariadbd ] && command -v my_print_defaults >/dev/null ||
  missing+=(mariadb-server-core mariadb-client-core)
command -v chromium-headless-shell >/dev/null || missing+=(chromium-headless-shell)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]} with apt"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: no apt; 'fmnist data prepare' will download the official files and verify them;" \
      "the MySQL metadata test needs MariaDB's server binaries"
  fi
fi

command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "setup: Python 3.11 is required (the lock pins cp311 wheels); found $("$PYTHON" --version 2>&1)" >&2
  exit 1
}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

stamp="$VENV/.installed-lock"
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the pinned packages into $VENV (about 2 minutes, 3.2 GB)"
  # tfx and ml-pipelines-sdk 1.16.0 declare Python < 3.11 but run on 3.11 (see ../shared/ENVIRONMENT.md).
  "$VENV/bin/pip" install -q --disable-pip-version-check --ignore-requires-python -r requirements/lock.txt
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
else
  echo "setup: $VENV is up to date with requirements/lock.txt"
fi

# The services the test suite starts (a GCS emulator behind a TLS proxy), in their own venv.
SERVICES_VENV=${SERVICES_VENV:-.venv-services}
[ -x "$SERVICES_VENV/bin/python" ] || "$PYTHON" -m venv "$SERVICES_VENV"
stamp="$SERVICES_VENV/.installed-lock"
want=$(sha256sum requirements/services-lock.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the test services into $SERVICES_VENV (mitmproxy, fake-gcs-server)"
  "$SERVICES_VENV/bin/pip" install -q --disable-pip-version-check -r requirements/services-lock.txt
  echo "$want" > "$stamp"
fi
