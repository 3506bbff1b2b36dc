"""Generates the Python gRPC stubs of proto/ into src/elexirion_optimizer/generated/.

The one implementation of stub generation: the package build runs it (setup.py's build_py, so
`pip install ./optimizer-py`, editable or not, works with no script run first), and
scripts/setup-python.sh runs it as a command to refresh the stubs of an installed checkout when a
.proto file changed. Nothing is written when the stamp (the .proto files, this file, the
grpcio-tools version) is unchanged.

Where the .proto files come from: `proto/` next to this file in an sdist (the sdist carries
them), else `../proto` in the repository.

    python grpc_stubs.py            # generate when out of date (needs grpcio-tools)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "src" / "elexirion_optimizer" / "generated"
# protoc writes absolute imports named after the proto path (`from elexirion.v1 import
# common_pb2`), which would need a top-level `elexirion` package on sys.path. Instead the stubs
# live inside our package and those imports are rewritten to `from
# elexirion_optimizer.generated.elexirion.v1 import ...`: nothing added at top level, and type
# checkers follow the .pyi files. Registered descriptor names stay `elexirion/v1/*.proto`, as the
# other services know them. Imports of google.protobuf are left alone (the protobuf runtime's).
_IMPORT = re.compile(r"^(from|import) elexirion([. ])", re.MULTILINE)
_REWRITTEN = r"\1 elexirion_optimizer.generated.elexirion\2"


class StubError(RuntimeError):
    """The stubs cannot be generated: no .proto files, or protoc refused them."""


def proto_root() -> Path:
    """The folder holding `elexirion/v1/*.proto`: the sdist's copy, else the repository's."""
    for candidate in (HERE / "proto", HERE.parent / "proto"):
        if (candidate / "elexirion").is_dir():
            return candidate
    raise StubError(
        f"no .proto files: expected {HERE / 'proto'} (an sdist) or {HERE.parent / 'proto'} "
        "(the repository); build optimizer-py from a checkout of the repository or from its sdist"
    )


def proto_files(root: Path) -> list[Path]:
    """Every .proto under `root`, in a stable order."""
    files = sorted(root.rglob("*.proto"), key=lambda path: path.relative_to(root).as_posix())
    if not files:
        raise StubError(f"no .proto files under {root}")
    return files


def stamp(root: Path) -> str:
    """What the stubs are generated from: the .proto files, this generator, the grpcio-tools version."""
    digest = hashlib.sha256()
    for path in proto_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(Path(__file__).read_bytes())
    digest.update(f"grpcio-tools {importlib.metadata.version('grpcio-tools')}".encode())
    return digest.hexdigest()


def rewrite_imports(text: str) -> str:
    return _IMPORT.sub(_REWRITTEN, text)


def generate(out: Path = OUT, root: Path | None = None) -> bool:
    """Writes the stubs into `out` unless they are current; True when it wrote them.

    The new tree is built beside `out` and swapped in, so an interrupted run leaves the old
    stubs (or none), never half of them.
    """
    root = root or proto_root()
    want = stamp(root)
    try:
        if (out / ".stamp").read_text().strip() == want:
            return False
    except OSError:
        pass
    from grpc_tools import protoc  # the build (or the dev extra) provides it

    # google/protobuf/*.proto (timestamp.proto, ...) come from the includes bundled with grpc_tools.
    well_known = Path(protoc.__file__).parent / "_proto"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".generated.", dir=out.parent))
    try:
        files = [str(path) for path in proto_files(root)]
        # Paths under the -I root: protoc names each file (and its registered descriptor) by
        # its path relative to the root, elexirion/v1/*.proto.
        code = protoc.main(["grpc_tools.protoc", f"-I{root}", f"-I{well_known}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *files])
        if code != 0:
            raise StubError(f"protoc failed (exit {code}) on the .proto files under {root}")
        for path in [*tmp.rglob("*.py"), *tmp.rglob("*.pyi")]:
            path.write_text(rewrite_imports(path.read_text()))
        for folder in [tmp, *(path for path in tmp.rglob("*") if path.is_dir())]:
            (folder / "__init__.py").touch()
        (tmp / "__init__.py").write_text('"""Generated from proto/ by optimizer-py/grpc_stubs.py; do not edit."""\n')
        (tmp / ".stamp").write_text(want + "\n")
        tmp.chmod(0o755)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def main() -> int:
    try:
        wrote = generate()
    except StubError as error:
        print(f"grpc_stubs: {error}", file=sys.stderr)
        return 1
    if wrote:
        print(f"grpc_stubs: generated {OUT.relative_to(HERE.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
