"""Builds libsockserv with cargo and bundles it in the package, so that
`pip install bindings/python` (or a wheel built from it) works alone: no
library installed elsewhere, no environment variable.

The library comes from, first match wins:
- SOCKSERV_BUILT_LIB: a libsockserv.so already built (packagers, or a
  build inside `cargo test`, where a nested cargo would wait on the lock);
- `cargo build --release --lib` in the checkout this directory sits in
  (bindings/python of the sockserv repository); CARGO and CARGO_TARGET_DIR
  are honoured. The .so cargo reports is copied next to sockserv/_lib.py,
  which loads it first.

Everything else is in pyproject.toml.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
LIB = "libsockserv.so"


def cargo_build() -> pathlib.Path:
    if not (REPO / "Cargo.toml").is_file() or not (REPO / "include" / "sockserv.h").is_file():
        sys.exit(
            f"setup.py: {REPO} is not the sockserv repository, so libsockserv cannot be built "
            "here; build from a checkout, or set SOCKSERV_BUILT_LIB to a built libsockserv.so"
        )
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [cargo, "build", "--release", "--lib", "--message-format=json-render-diagnostics"]
    print("setup.py: " + " ".join(cmd), file=sys.stderr, flush=True)
    try:
        done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    except FileNotFoundError:
        sys.exit("setup.py: cargo not found (install Rust: https://rustup.rs, or set CARGO)")
    except subprocess.CalledProcessError as e:
        sys.exit(f"setup.py: cargo build failed ({e.returncode})")
    found = []
    for line in done.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "sockserv":
            found += [f for f in msg["filenames"] if f.endswith("/" + LIB)]
    if not found:
        sys.exit("setup.py: cargo built no libsockserv.so (is crate-type cdylib still set?)")
    return pathlib.Path(found[-1])


class BuildPyWithLibrary(build_py):
    """build_py, then the shared library into the package's build directory."""

    def run(self) -> None:
        super().run()
        built = os.environ.get("SOCKSERV_BUILT_LIB")
        source = pathlib.Path(built) if built else cargo_build()
        if not source.is_file():
            sys.exit(f"setup.py: {source} does not exist")
        dest = pathlib.Path(self.build_lib) / "sockserv" / LIB
        dest.parent.mkdir(parents=True, exist_ok=True)
        # copyfile, not copy2: no stale mode or timestamp games.
        shutil.copyfile(source, dest)
        dest.chmod(0o755)
        # The release profile keeps line tables (debug = 1): not needed in a
        # wheel, and they are most of the file. Optional: strip may be absent.
        strip = shutil.which("strip")
        if strip and subprocess.run([strip, "--strip-debug", str(dest)]).returncode != 0:
            print("setup.py: strip failed; bundling the library unstripped", file=sys.stderr)
        print(f"setup.py: bundled {source} as {dest}", file=sys.stderr)


class BinaryDistribution(Distribution):
    """The wheel holds a native library: tag it for this platform."""

    def has_ext_modules(self) -> bool:
        return True


cmdclass: dict = {"build_py": BuildPyWithLibrary}
try:
    try:
        from setuptools.command.bdist_wheel import bdist_wheel
    except ImportError:  # setuptools < 70.1: the wheel package's
        from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

    class PlatformWheel(bdist_wheel):  # type: ignore[misc, valid-type]
        """ctypes, not the C API of Python: any Python 3 on this platform."""

        def get_tag(self) -> tuple:
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:
    pass  # no wheel support: `setup.py install`-style builds still work

options: dict = {}
if (REPO / "Cargo.toml").is_file():
    # pip builds in the source tree: keep its build/ and .egg-info out of
    # it, under cargo's (ignored) target directory.
    scratch = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "python-build"
    options = {"build": {"build_base": str(scratch / "build")}, "egg_info": {"egg_base": str(scratch)}}
    scratch.mkdir(parents=True, exist_ok=True)

setup(cmdclass=cmdclass, distclass=BinaryDistribution, options=options)
