"""Static checks of the Slicer module, which cannot run without Slicer here (its self-test,
CMRFoundationTest, runs the pytest scene tests and whole analyses inside Slicer).

The module compiles as Python 3.9 (Slicer 5.8 loads it to say it is not supported) and
imports nothing heavy at load time (torch and the analysis are imported after the
first-use check); its .ui parses, holds every widget the code uses, and each widget bound
to the parameter node (dynamic property "SlicerParameterName") names a parameter of a
type that widget's parameterNodeWrapper connector takes; folder fields stay empty when
empty; every slicer.util, PyTorchUtils and DICOMUtils call matches the signature in the
source of the Slicer release it supports; the build installs the .ui.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import pytest
from packaging.specifiers import SpecifierSet

from conftest import REPO

MODULE = REPO / "CMRFoundation" / "CMRFoundation.py"
UI = REPO / "CMRFoundation" / "Resources" / "UI" / "CMRFoundation.ui"
MODULE_TOP_LEVEL_IMPORTS = {"logging", "os", "shutil", "sys", "pathlib", "typing", "qt", "vtk", "slicer",
                            "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule", "slicer.util"}
# The parameter type each widget class takes in slicer/parameterNodeWrapper/guiConnectors.py.
CONNECTOR_TYPES = {"ctkPathLineEdit": "Path", "QComboBox": "Choice", "QDoubleSpinBox": "float", "QLineEdit": "str",
                   "QCheckBox": "bool", "QSpinBox": "int",
                   "qMRMLNodeComboBox": "slicer.vtkMRMLSegmentationNode"}


# Parameter names of the functions the module calls, from the sources of what it supports ("**": keywords
# passed on): Slicer v5.10.0 Base/Python/slicer/util.py and Modules/Scripted/DICOMLib/DICOMUtils.py,
# SlicerPyTorch's PyTorchUtils/PyTorchUtils.py (PyTorchUtilsLogic).
SLICER_UTIL = {
    "loadUI": ("path",), "childWidgetVariables": ("widget",), "mainWindow": (), "restart": (),
    "tryWithErrorDisplay": ("message", "show", "waitCursor"),
    "confirmOkCancelDisplay": ("text", "windowTitle", "parent", "**"),
    "confirmYesNoDisplay": ("text", "windowTitle", "parent", "**"),
    "errorDisplay": ("text", "windowTitle", "parent", "standardButtons", "**"),
    "pip_install": ("requirements",), "tempDirectory": ("key", "tempDir", "includeDateTime"),
    "launchConsoleProcess": ("args", "useStartupEnvironment", "updateEnvironment", "cwd"),
    "startupEnvironment": (), "getNodesByClass": ("className", "scene"),
}
OTHER_MODULES = {
    "PyTorchUtils.PyTorchUtilsLogic().installTorch": ("askConfirmation", "forceComputationBackend",
                                                      "torchVersionRequirement", "torchvisionVersionRequirement"),
    "DICOMUtils.TemporaryDICOMDatabase": ("directory",),
    "DICOMUtils.importDicom": ("dicomDataDir", "dicomDatabase", "copyFiles"),
    "DICOMUtils.loadPatientByUID": ("patientUID", "messages", "progressCallback", "enabledPluginClassNames"),
}


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(MODULE.read_text(encoding="utf-8"), filename=str(MODULE))


@pytest.fixture(scope="module")
def widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def parameters(tree: ast.Module) -> dict[str, str]:
    """Parameter name -> its annotation's source, from the @parameterNodeWrapper class."""
    wrapped = next(node for node in tree.body if isinstance(node, ast.ClassDef)
                   and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list))
    return {s.target.id: ast.unparse(s.annotation) for s in wrapped.body if isinstance(s, ast.AnnAssign)}


def test_module_imports_only_slicer_and_the_standard_library_at_load(tree):
    imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert imported <= MODULE_TOP_LEVEL_IMPORTS, imported - MODULE_TOP_LEVEL_IMPORTS


def test_every_widget_the_code_uses_is_in_the_ui(widgets):
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text(encoding="utf-8")))
    assert used and used <= set(widgets), used - set(widgets)


def test_bound_widgets_name_parameters_their_connectors_take(tree, widgets):
    declared = parameters(tree)
    bound = {}
    for widget in widgets.values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    assert bound and set(bound) <= set(declared), set(bound) - set(declared)
    for name, widget_class in bound.items():
        assert CONNECTOR_TYPES[widget_class] in declared[name], f"{name}: {declared[name]} on a {widget_class}"


def test_ui_declares_its_custom_widgets_and_connects_existing_ones(widgets):
    root = ET.parse(UI).getroot()
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    for widget in widgets.values():
        assert widget.get("class").startswith("Q") or widget.get("class") in custom, widget.get("class")
    for connection in root.iter("connection"):
        assert connection.findtext("sender") in widgets and connection.findtext("receiver") in widgets


def test_build_installs_the_ui():
    cmake = (REPO / "CMRFoundation" / "CMakeLists.txt").read_text(encoding="utf-8")
    resources = re.search(r"set\(MODULE_PYTHON_RESOURCES(.*?)\)", cmake, re.S).group(1).split()
    assert "Resources/UI/${MODULE_NAME}.ui" in resources


def module_constant(tree: ast.Module, name: str, default=None):
    return next((ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(target, "id", None) == name for target in node.targets)), default)


def module_function(tree: ast.Module, name: str, namespace: dict):
    """A top-level function of the module, compiled on its own (the module needs Slicer to import)."""
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)
    exec(compile(ast.Module([function], []), str(MODULE), "exec"), namespace)
    return namespace[name]


def method(tree: ast.Module, class_name: str, name: str) -> ast.FunctionDef:
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name)
    return next(node for node in cls.body if isinstance(node, ast.FunctionDef) and node.name == name)


def test_module_loads_in_slicer_5_8_python_to_refuse_it(tree):
    """Slicer 5.8 runs Python 3.9, the library needs 3.10: the module must compile there and say so."""
    ast.parse(MODULE.read_text(encoding="utf-8"), feature_version=(3, 9))
    minimum = module_constant(tree, "MINIMUM_PYTHON")
    requires = SpecifierSet(re.search(r'requires-python = "([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1))
    assert requires.contains(f"{minimum[0]}.{minimum[1]}") and not requires.contains(f"{minimum[0]}.{minimum[1] - 1}")
    message = module_function(tree, "unsupportedPythonMessage",
                              {"MINIMUM_PYTHON": minimum, "MINIMUM_SLICER": module_constant(tree, "MINIMUM_SLICER"),
                               "Optional": Optional})
    refusal = message((3, 9, 10, "final", 0))
    assert "Slicer 5.10 or later" in refusal and "Python 3.9" in refusal
    assert message((3, 12, 10, "final", 0)) is None and message((3, 10, 0)) is None
    # The refusal comes first, on load and in the widget, before anything that needs the library.
    for class_name, name, first_needing_the_library in [("CMRFoundation", "__init__", None),
                                                        ("CMRFoundationWidget", "setup", "loadUI")]:
        source = ast.unparse(method(tree, class_name, name))
        assert "unsupportedPythonMessage(sys.version_info)" in source
        if first_needing_the_library:
            assert source.index("unsupportedPythonMessage") < source.index(first_needing_the_library)


def test_folder_fields_stay_empty_when_empty(tree, widgets):
    """parameterNodeWrapper's Path type turns an empty field into "." (its serializer reads Path(""), its
    ctkPathLineEdit connector writes str(Path(""))): folders are str parameters, each connected by hand."""
    declared = parameters(tree)
    fields = module_constant(tree, "FOLDER_FIELDS", {})
    types = {"str": str, "Path": Path}
    for name, widget in widgets.items():
        if widget.get("class") != "ctkPathLineEdit":
            continue
        bound = [p.find("string").text for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]
        parameter = fields.get(name) or bound[0]
        empty = ""
        assert str(types[declared[parameter]](empty)) == empty, f"{parameter}: {declared[parameter]} turns '' into '.'"
        assert not bound, f"{name} is bound through parameterNodeWrapper's Path connector"
    source = MODULE.read_text(encoding="utf-8")
    assert "currentPathChanged.connect" in source and "widget.currentPath = value" in source
    chosen = module_function(tree, "chosenFolder", {"Optional": Optional})
    assert chosen("") is None and chosen("  ") is None and chosen("/data/study") == "/data/study"


def called_name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def test_every_slicer_call_matches_the_supported_slicers_source(tree):
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    checked = 0
    for call in calls:
        name = called_name(call)
        if name.startswith("slicer.util."):
            parameters_ = SLICER_UTIL.get(name.removeprefix("slicer.util."))
        elif name in OTHER_MODULES:
            parameters_ = OTHER_MODULES[name]
        else:
            continue
        assert parameters_ is not None, f"{name} is not in the supported Slicer's slicer.util"
        named = [p for p in parameters_ if p != "**"]
        assert len(call.args) <= len(named), f"{name}: {len(call.args)} positional arguments"
        for keyword in call.keywords:
            assert keyword.arg in named or "**" in parameters_, f"{name}: no parameter {keyword.arg}"
        checked += 1
    assert checked >= 20


def test_the_analysis_runs_under_pythonslicer_and_cleanup_kills_its_tree(tree):
    launch = ast.unparse(method(tree, "CMRFoundationLogic", "launchProcess"))
    assert "slicer.util.launchConsoleProcess(command" in launch and "child_environment(slicer.util.startupEnvironment())" in launch
    start = ast.unparse(method(tree, "CMRFoundationLogic", "startAnalysis"))
    assert "launch=self.launchProcess" in start and "python=self.pythonExecutable()" in start
    assert "shutil.which('PythonSlicer')" in ast.unparse(method(tree, "CMRFoundationLogic", "pythonExecutable"))
    assert "self.run.kill()" in ast.unparse(method(tree, "CMRFoundationWidget", "cleanup"))


def test_the_self_test_runs_the_pytest_scene_tests_inside_slicer(tree):
    files = module_constant(tree, "SLICER_PYTEST_FILES")
    assert {"test_scene.py", "test_scene_edits.py", "test_scene_loaded.py", "test_slicer_pydicom.py"} <= set(files)
    assert all((REPO / "Testing" / "Python" / name).is_file() for name in files)
    assert "pytest.main(arguments)" in ast.unparse(method(tree, "CMRFoundationLogic", "runPytest"))
    run = ast.unparse(method(tree, "CMRFoundationTest", "runTest"))
    assert "self.test_pytest_suite_in_slicer" in run and "self.test_database_study_analysed_onto_its_loaded_volumes" in run
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "slicer.testing.runUnitTest(" in readme and "--testing" in readme and "'CMRFoundation')" in readme
