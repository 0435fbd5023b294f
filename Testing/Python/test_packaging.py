"""The Slicer build installs every library file and resource, and the package imports without
Qt/Slicer, except the scene layer, which imports slicer's MRML (slicer-core) but never Qt."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def test_cmake_lists_every_library_file():
    cmake = (REPO / "CMRFoundation" / "CMakeLists.txt").read_text()
    block = re.search(r"set\(LIBRARY_PYTHON_SCRIPTS(.*?)\)", cmake, re.S).group(1)
    listed = set(block.split())
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "CMRFoundationLib").rglob("*.py")}
    assert listed == on_disk, f"missing from CMake: {on_disk - listed}; not on disk: {listed - on_disk}"


def test_cmake_installs_the_terminology():
    cmake = (REPO / "CMRFoundation" / "CMakeLists.txt").read_text()
    assert "Resources/Terminology" in cmake
    assert (REPO / "Resources" / "Terminology" / "CMRFoundation.term.json").is_file()


def test_cmake_installs_the_constraints_where_the_installer_looks():
    from CMRFoundationLib.installation import CONSTRAINTS_FILE

    cmake = (REPO / "CMRFoundation" / "CMakeLists.txt").read_text()
    relative = CONSTRAINTS_FILE.relative_to(REPO).as_posix()  # beside the library, as installed
    assert f"../{relative}" in cmake and "/Resources/Requirements" in cmake and CONSTRAINTS_FILE.is_file()


def test_the_extension_depends_on_the_pytorch_extension():
    """As SlicerTotalSegmentator declares it: the Extensions Manager installs PyTorch with it."""
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "PyTorch" in re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', cmake).group(1).split()


def imported_roots(code: str) -> list[str]:
    """Top-level GUI/Slicer packages in sys.modules after running ``code`` in a fresh interpreter."""
    probe = code + (
        "\nimport sys, json\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} & "
        "{'qt', 'PythonQt', 'PySide6', 'PyQt5', 'slicer', 'ctk'})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_library_never_imports_qt_or_slicer():
    # Every module but the scene layer's (pkgutil.walk_packages would import that package to walk it).
    names = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                   for p in (REPO / "CMRFoundationLib").rglob("*.py") if "scene" not in p.relative_to(REPO).parts)
    assert imported_roots("import importlib\n" + "".join(f"importlib.import_module({n!r})\n" for n in names)) == []
    assert imported_roots("import CMRFoundationLib, CMRFoundationLib.analysis") == []


def test_scene_layer_imports_slicer_but_never_qt():
    pytest.importorskip("slicer")
    code = (
        "import pkgutil, importlib, CMRFoundationLib.scene as scene\n"
        "for m in pkgutil.walk_packages(scene.__path__, 'CMRFoundationLib.scene.'):\n"
        "    importlib.import_module(m.name)\n"
    )
    assert imported_roots(code) == ["slicer"]


def test_inference_never_imports_monai():
    """MONAI is a training-only dependency (the ``train`` extra, for the ResNet50 baselines):
    the library, ViT and hybrid models, the carried weights and inference work without it."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import CMRFoundationLib, CMRFoundationLib.models, CMRFoundationLib.inference\n"
        "import CMRFoundationLib.analysis, CMRFoundationLib.runner, CMRFoundationLib.cli\n"
        "import CMRFoundationLib.installation\n"
        "from CMRFoundationLib.inference import TaskPredictor\n"
        "from CMRFoundationLib.models import VIT_CONFIGS, architecture_of, build_model\n"
        "from CMRFoundationLib.models.hybrid import HYBRID_CONFIGS\n"
        "from CMRFoundationLib.weights import DEFAULT_WEIGHTS_DIR, available_tasks\n"
        "architecture_of(build_model('seg_lge', next(iter(VIT_CONFIGS))))\n"
        "architecture_of(build_model('seg_lge', next(iter(HYBRID_CONFIGS))))\n"
        "for task in available_tasks(DEFAULT_WEIGHTS_DIR):\n"
        "    TaskPredictor.load(task, DEFAULT_WEIGHTS_DIR, 'cpu').predict_images(np.zeros((1, 48, 40)), (1.5, 1.5))\n"
        "assert 'monai' not in sys.modules, sorted(m for m in sys.modules if m.startswith('monai'))[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_no_script_edits_sys_path():
    """cmrtrain is installed with the library (pyproject.toml) and pytest finds the training
    scripts (pythonpath): nothing inserts folders into sys.path. Only the Slicer batch script
    may, to find the library of a source checkout from Slicer's own Python."""
    allowed = {"Resources/Scripts/batch_analyze.py"}
    offenders = sorted(
        p.relative_to(REPO).as_posix()
        for folder in ("CMRFoundation", "CMRFoundationLib", "Training", "Testing", "Resources")
        for p in (REPO / folder).rglob("*.py")
        if re.search(r"sys\.path\.(insert|append)", p.read_text(encoding="utf-8"))
        and p.relative_to(REPO).as_posix() not in allowed
    )
    assert offenders == []


@pytest.mark.slow
def test_the_readmes_development_install_makes_the_library_importable(tmp_path):
    """The README's `pip install` line for Slicer, run in a fresh environment standing in for Slicer's
    Python (which ships pip, setuptools and wheel: the environment is given this one's): the library
    is then importable from anywhere, from the checkout, with its resources beside it."""
    import sysconfig
    import textwrap

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Develop and test in Slicer"):]
    (line,) = [text for text in section.splitlines() if text.startswith("PythonSlicer -m pip install")]
    environment = tmp_path / "slicer-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True)
    python = environment / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    (Path(site_packages) / "host.pth").write_text(sysconfig.get_path("purelib") + "\n")  # pip, setuptools, numpy, ...
    command = line.replace("PythonSlicer", str(python)).replace("/path/to/CMRFoundation", str(REPO)).split()
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    probe = textwrap.dedent("""
        import CMRFoundationLib
        from CMRFoundationLib.installation import CONSTRAINTS_FILE
        print(CMRFoundationLib.__file__)
        print(CONSTRAINTS_FILE.is_file())
    """)
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    location, resources = out.stdout.split()
    assert Path(location).resolve() == (REPO / "CMRFoundationLib" / "__init__.py").resolve() and resources == "True"
