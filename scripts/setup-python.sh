#!/usr/bin/env bash
# Sets up optimizer-py for development: a venv at optimizer-py/.venv with the package installed
# editable with its dev extras. The package's build generates the Python gRPC stubs from proto/
# into optimizer-py/src/elexirion_optimizer/generated/ (git-ignored, never edited by hand; see
# optimizer-py/grpc_stubs.py), so `pip install ./optimizer-py` needs no script; this one only
# refreshes them when a .proto file changes after the install.
# Idempotent and quiet when there is nothing to do: pip runs only when pyproject.toml or setup.py
# changed, protoc only when a .proto file, the generator or the grpcio-tools version changed.
# Set ELEXIRION_PYTHON to choose the interpreter the venv is made from (default: python3, >= 3.11).
set -euo pipefail
exec </dev/null

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PKG="$ROOT/optimizer-py"
VENV="$PKG/.venv"
PY="$VENV/bin/python"
cd "$ROOT"

# 1. The venv, made again when missing or broken (e.g. its base interpreter went away).
if ! "$PY" -c '' >/dev/null 2>&1; then
  rm -rf "$VENV"
  "${ELEXIRION_PYTHON:-python3}" -m venv "$VENV"
fi

# 2. Editable install with dev extras (its build generates the stubs), skipped while the build's
#    inputs are unchanged.
pip_stamp="$VENV/.elexirion-pyproject.sha256"
want="$(cat optimizer-py/pyproject.toml optimizer-py/setup.py | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$pip_stamp" 2>/dev/null || true)" != "$want" ]]; then
  "$PY" -m pip install --quiet --disable-pip-version-check -e "$PKG[dev]"
  echo "$want" >"$pip_stamp"
fi

# 3. Stubs again when a .proto changed since the install: the build's own generator, which does
#    nothing while its stamp (.proto files, generator, grpcio-tools version) holds.
"$PY" "$PKG/grpc_stubs.py"
