"""Static checks of the Slicer module, which cannot run without Slicer here.

The module compiles and imports nothing heavy at load time (torch and the analysis are
imported after the first-use check); its .ui parses, holds every widget the code uses,
and each widget bound to the parameter node (dynamic property "SlicerParameterName")
names a parameter of a type that widget's parameterNodeWrapper connector takes; the
build installs the .ui.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO

MODULE = REPO / "CMRFoundation" / "CMRFoundation.py"
UI = REPO / "CMRFoundation" / "Resources" / "UI" / "CMRFoundation.ui"
MODULE_TOP_LEVEL_IMPORTS = {"logging", "os", "shutil", "sys", "pathlib", "typing", "qt", "vtk", "slicer",
                            "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule", "slicer.util"}
# The parameter type each widget class takes in slicer/parameterNodeWrapper/guiConnectors.py.
CONNECTOR_TYPES = {"ctkPathLineEdit": "Path", "QComboBox": "Choice", "QDoubleSpinBox": "float", "QLineEdit": "str",
                   "QCheckBox": "bool", "QSpinBox": "int",
                   "qMRMLNodeComboBox": "slicer.vtkMRMLSegmentationNode"}


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
