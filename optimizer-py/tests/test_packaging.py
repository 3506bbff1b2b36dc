"""`pip install ./optimizer-py` works on a fresh checkout, editable or not, and from its sdist.

Each case copies optimizer-py/ and proto/ (no generated stubs, no venv) to a temporary folder,
makes a fresh virtual environment and installs with the real pip build (build isolation, the
build requirements of pyproject.toml from the index or pip's cache), then imports the package and
its generated stubs in that environment. Only the runtime dependencies (grpcio, protobuf, dspy,
...) are borrowed from this venv, through a .pth file, so the cases need no network for them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "optimizer-py"
# What a fresh clone does not have.
NOT_IN_A_CLONE = shutil.ignore_patterns(".venv", "generated", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache")

PROBE = """
import importlib.metadata, json, sys
import elexirion_optimizer
from elexirion_optimizer.generated.elexirion.v1 import gateway_pb2, gateway_pb2_grpc, prompts_pb2
from pathlib import Path
generated = Path(gateway_pb2.__file__).parent
scripts = [e.value for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "elexirion-optimizer"]
print(json.dumps({
    "package": elexirion_optimizer.__file__,
    "stubs": gateway_pb2.__file__,
    "descriptor": gateway_pb2.DESCRIPTOR.name,
    "stub_class": hasattr(gateway_pb2_grpc, "GatewayStub"),
    "template": prompts_pb2.PromptTemplate(prompt="p").prompt,
    "pyi": sorted(p.name for p in generated.glob("*.pyi")),
    "scripts": scripts,
}))
"""


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fresh_checkout(root: Path) -> Path:
    shutil.copytree(PACKAGE, root / "optimizer-py", ignore=NOT_IN_A_CLONE)
    shutil.copytree(REPO / "proto", root / "proto")
    return root / "optimizer-py"


def fresh_venv(path: Path, dependencies: Path) -> Path:
    """A venv without this package whose imports fall back to `dependencies` (a .pth)."""
    run(sys.executable, "-m", "venv", "--without-pip", path)
    python = path / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    Path(purelib, "borrowed-dependencies.pth").write_text(f"{dependencies}\n")
    return python


def install(python: Path, *target: str | Path) -> None:
    # This venv's pip drives the install into the fresh one (--python); the build is pip's own.
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--disable-pip-version-check", "--quiet", *target)


def probe(python: Path) -> dict:
    # From a neutral folder, so the current directory does not put a package on sys.path.
    return json.loads(run(python, "-c", PROBE, cwd=python.parent))


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This venv's installed packages, without elexirion-optimizer itself (links, not copies)."""
    farm = tmp_path_factory.mktemp("dependencies")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.startswith(("elexirion_optimizer", "__editable__", "_elexirion_optimizer")) or name.endswith(".pth"):
            continue
        (farm / entry.name).symlink_to(entry)
    return farm


def assert_works(found: dict, home: Path) -> None:
    assert Path(found["package"]).is_relative_to(home), found["package"]
    assert Path(found["stubs"]).is_relative_to(home), found["stubs"]
    assert found["descriptor"] == "elexirion/v1/gateway.proto"
    assert found["stub_class"] is True
    assert found["template"] == "p"
    assert "gateway_pb2.pyi" in found["pyi"]
    assert found["scripts"] == ["elexirion_optimizer.cli:main"]


def test_pip_install_of_a_fresh_checkout(tmp_path: Path, dependencies: Path) -> None:
    source = fresh_checkout(tmp_path / "clone")
    python = fresh_venv(tmp_path / "venv", dependencies)
    install(python, source)
    found = probe(python)
    assert_works(found, tmp_path / "venv")
    assert (tmp_path / "venv" / "bin" / "elexirion-optimizer").exists()


def test_editable_install_of_a_fresh_checkout(tmp_path: Path, dependencies: Path) -> None:
    source = fresh_checkout(tmp_path / "clone")
    python = fresh_venv(tmp_path / "venv", dependencies)
    install(python, "-e", source)
    found = probe(python)
    # Editable: the package and the stubs the build generated are the checkout's own files.
    assert_works(found, source / "src")


def test_the_sdist_carries_the_protos_and_installs_alone(tmp_path: Path, dependencies: Path) -> None:
    source = fresh_checkout(tmp_path / "clone")
    out = tmp_path / "dist"
    # setuptools' PEP 517 hook, as `python -m build --sdist` calls it.
    name = run(sys.executable, "-c", "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))", out, cwd=source).strip().splitlines()[-1]
    with tarfile.open(out / name) as archive:
        members = {member.split("/", 1)[1] for member in archive.getnames() if "/" in member}
    assert {"proto/elexirion/v1/gateway.proto", "proto/elexirion/v1/prompts.proto", "grpc_stubs.py", "setup.py", "pyproject.toml"} <= members
    assert not any("/generated/" in member for member in members)
    # Installed from somewhere with no repository around it: only the sdist's own protos.
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    sdist = shutil.copy(out / name, alone)
    python = fresh_venv(tmp_path / "venv", dependencies)
    install(python, sdist)
    assert_works(probe(python), tmp_path / "venv")
