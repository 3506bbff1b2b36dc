"""Build hooks: the gRPC stubs are generated while the package builds (grpc_stubs.py).

Metadata lives in pyproject.toml. build_py generates the stubs before it copies the package, so
a wheel carries them and an editable install finds them in src/; sdist carries the .proto files
(from ../proto in the repository) so a build from the sdist can generate them too.
"""

import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

# setuptools' PEP 517 backend does not put the project folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpc_stubs  # noqa: E402


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        try:
            grpc_stubs.generate()
        except grpc_stubs.StubError as error:
            raise SystemExit(f"elexirion-optimizer: cannot generate the gRPC stubs: {error}") from error
        # The package list was found before the stubs existed: find it again, so the wheel
        # holds elexirion_optimizer.generated.* too (their .pyi files come with package-data).
        packages = find_packages(where="src")
        self.packages = self.distribution.packages = packages
        self.__dict__.pop("data_files", None)
        super().run()


class SdistWithProtos(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        shutil.copytree(grpc_stubs.proto_root(), Path(base_dir) / "proto", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.bak"))


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos})
