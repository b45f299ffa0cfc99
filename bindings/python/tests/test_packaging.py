"""The package as shipped: the program using the whole API runs from the
checkout, the package is marked typed, and setup.py bundles what it builds."""

import os
import pathlib
import subprocess
import sys

import sockserv
from conftest import REPO

HERE = pathlib.Path(__file__).resolve().parent
PKG = HERE.parent / "sockserv"


def test_whole_api_program_runs():
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    out = subprocess.run([sys.executable, "-B", str(HERE / "whole_api.py")], capture_output=True,
                         text=True, timeout=120, env=env, cwd=str(REPO))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "whole api ok"


def test_package_is_typed_and_bundles_the_library():
    assert (PKG / "py.typed").is_file()
    setup = (HERE.parent / "setup.py").read_text()
    assert '"build", "--release", "--lib"' in setup
    assert "libsockserv.so" in sockserv._lib.BUNDLED
    pyproject = (HERE.parent / "pyproject.toml").read_text()
    assert 'package-data = { sockserv = ["py.typed"] }' in pyproject


def test_bundled_library_is_found_first(tmp_path):
    # A copy of the package with a library beside it, imported from
    # elsewhere with no SOCKSERV_LIB: that copy is the one loaded.
    pkg = tmp_path / "sockserv"
    pkg.mkdir()
    for f in PKG.glob("*.py"):
        (pkg / f.name).write_bytes(f.read_bytes())
    (pkg / "libsockserv.so").write_bytes(pathlib.Path(sockserv.library_path()).read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("SOCKSERV_LIB", "PYTHONPATH", "LD_LIBRARY_PATH")}
    out = subprocess.run([sys.executable, "-B", "-c", "import sockserv; print(sockserv.library_path())"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(pkg / "libsockserv.so")
    # SOCKSERV_LIB still overrides it; a wrong one fails loudly at import.
    env["SOCKSERV_LIB"] = str(tmp_path / "nope.so")
    out = subprocess.run([sys.executable, "-B", "-c", "import sockserv"], capture_output=True, text=True,
                         timeout=60, env=env, cwd=str(tmp_path))
    assert out.returncode != 0 and "nope.so" in out.stderr


def test_the_package_passes_mypy_strict():
    try:
        import mypy.api
    except ImportError:
        import pytest

        # Not a failure on CI: the fresh-venv test (tests/packaging/python.rs)
        # installs mypy and runs this check there too.
        pytest.skip("mypy is not installed for this Python: mypy --strict ran only in the fresh-venv test")
    out, err, status = mypy.api.run(["--strict", "--no-incremental", "--cache-dir", os.devnull,
                                     str(PKG), str(HERE / "whole_api.py")])
    assert status == 0, out + err
