"""The Slicer build installs every library file, and the package imports without Qt/Slicer."""

import re
import subprocess
import sys

from conftest import REPO


def test_cmake_lists_every_library_file():
    cmake = (REPO / "CMRFoundation" / "CMakeLists.txt").read_text()
    block = re.search(r"set\(LIBRARY_PYTHON_SCRIPTS(.*?)\)", cmake, re.S).group(1)
    listed = set(block.split())
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "CMRFoundationLib").rglob("*.py")}
    assert listed == on_disk, f"missing from CMake: {on_disk - listed}; not on disk: {listed - on_disk}"


def test_library_never_imports_qt_or_slicer():
    code = (
        "import sys, pkgutil, importlib, CMRFoundationLib\n"
        "for m in pkgutil.walk_packages(CMRFoundationLib.__path__, 'CMRFoundationLib.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('qt', 'PythonQt', 'PySide6', 'PyQt5', 'slicer', 'ctk')]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
