"""CMRFoundation: the Slicer module.

The widget stays thin and the logic only glues Slicer to the Qt-free CMRFoundationLib,
which does the work, runs in plain Python as well (`cmrfm` command) and is tested there:
the analysis runs as a separate process (CMRFoundationLib.runner) that a QTimer
polls, so Slicer never freezes, and its results come into the scene through
CMRFoundationLib.scene.

CMRFoundationLib.analysis imports torch, so it is imported only after the first-use
check has made sure it and the other requirements are installed (MONAI is not one:
only training uses it).

Supported: Slicer 5.10 and later. The library needs Python 3.10 (Slicer 5.8 and older
run Python 3.9): there the module loads, says so and does nothing else, so this file
itself stays Python 3.9 syntax and imports nothing of the library at load.
"""

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

METHOD_CITATION = (
    'A. J. Jacob et al., "Towards a vision foundation model for comprehensive assessment of '
    'Cardiac MRI", arXiv:2410.01665, 2024.'
)

FOLDER_INPUT = "DICOM folder"
SCENE_INPUT = "Study loaded in Slicer"
POLL_INTERVAL_MS = 250
MINIMUM_PYTHON = (3, 10)  # pyproject.toml's requires-python
MINIMUM_SLICER = "5.10"  # the first Slicer release with Python >= 3.10 (3.12)
# The folder fields: path line edit -> its str parameter. Not bound through parameterNodeWrapper:
# its Path type turns an empty field into "." (PathSerializer.read: Path(""), the connector writes str(Path("")) back).
# What the self-test runs with pytest inside Slicer: the scene layer against Slicer's own MRML and logics,
# the installed packages, and the pydicom calls of Slicer's own DICOM modules.
SLICER_PYTEST_FILES = ("test_scene.py", "test_scene_edits.py", "test_scene_loaded.py", "test_installation.py",
                       "test_slicer_pydicom.py")
FOLDER_FIELDS = {
    "dicomFolderPathLineEdit": "dicomFolder",
    "outputFolderPathLineEdit": "outputFolder",
    "weightsFolderPathLineEdit": "weightsFolder",
    "labelFolderPathLineEdit": "labelFolder",
}


def unsupportedPythonMessage(versionInfo: tuple) -> Optional[str]:
    """Why the extension cannot run in this Slicer's Python, or None when it can."""
    if tuple(versionInfo[:2]) >= MINIMUM_PYTHON:
        return None
    return (f"CMR Foundation needs Slicer {MINIMUM_SLICER} or later: its library needs Python "
            f"{MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or later, and this Slicer runs Python "
            f"{versionInfo[0]}.{versionInfo[1]}. Install a newer Slicer to use it.")


class CMRFoundation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CMR Foundation"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = []
        self.parent.contributors = ["CMRFoundation developers"]
        self.parent.helpText = (
            "Cardiac MR analysis with a self-supervised vision foundation model (ViT-S/8, DINO): "
            "series classification, segmentation of cine, LGE and mapping series, RV insertion "
            "points and the measurements of a CMR report (ED/ES, volumes, EF, LV mass, AHA segments, "
            "segmental T1/T2, LGE extent).<br><br>"
            "<b>How to use:</b> choose the study (a DICOM folder, or a study loaded from Slicer's DICOM "
            "database), then <i>Analyze study</i>. The analysis runs in the background (Cancel stops it); "
            "its volumes, segmentations, landmarks and measurements table then appear under the study in "
            "the Data module, and the output folder holds the report (report.html), analysis.json, "
            "measurements.csv, label maps, DICOM SEG and SR. A study loaded from the DICOM database is "
            "analysed from the files of its loaded series, and the results attach to those volumes. On first "
            "use the Python packages it needs are installed after you confirm (PyTorch through the PyTorch "
            "extension; the others at the versions the extension was tested with). The weights carried with "
            "the extension are small CPU-trained ones; full-size weights can be imported offline under "
            "<i>Advanced</i>.<br><br>Needs Slicer " + MINIMUM_SLICER + " or later.<br><br>"
            "Method: " + METHOD_CITATION
        )
        self.parent.acknowledgementText = "Method: " + METHOD_CITATION
        unsupported = unsupportedPythonMessage(sys.version_info)
        if unsupported:
            logging.error(unsupported)
            self.parent.helpText = f"<b>{unsupported}</b><br><br>" + self.parent.helpText


@parameterNodeWrapper
class CMRFoundationParameterNode:
    """The module's choices, saved with the scene. Folders are str, "" when none is chosen (FOLDER_FIELDS)."""

    inputSource: Annotated[str, Choice([FOLDER_INPUT, SCENE_INPUT])] = FOLDER_INPUT
    dicomFolder: str
    studyInstanceUID: str  # of the study chosen in the subject hierarchy (set by the widget)
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    weightsFolder: str  # empty: the weights carried with the extension
    outputFolder: str  # where each analysis gets a new folder; empty: <default scene path>/CMRFoundation
    lgeThresholdSD: Annotated[float, WithinRange(1.0, 10.0)] = 5.0
    seriesChoices: str  # e.g. "cine_sax=6, lge_sax=10": overrides the automatic series choice
    exportSegmentation: slicer.vtkMRMLSegmentationNode  # a corrected segmentation to export as training labels
    labelFolder: str  # the training label folder it is added to


def chosenFolder(path: str) -> Optional[str]:
    """The folder a folder parameter holds, None when empty ("." too: what scenes saved before held for empty)."""
    return None if path.strip() in ("", ".") else path.strip()


class CMRFoundationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.run = None  # the analysis process while it runs
        self.studyFolder = None  # what that run analyses
        self.reportPath = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        unsupported = unsupportedPythonMessage(sys.version_info)
        if unsupported:  # nothing below would work: say why instead
            label = qt.QLabel(unsupported)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CMRFoundation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CMRFoundationLogic()

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.studySelector.connect("currentItemChanged(vtkIdType)", self.onStudyItemChanged)
        self.ui.analyzeButton.connect("clicked(bool)", self.onAnalyzeButton)
        self.ui.openReportButton.connect("clicked(bool)", self.onOpenReport)
        self.ui.importWeightsFileButton.connect("clicked(bool)", self.onImportWeightsFile)
        self.ui.importWeightsFolderButton.connect("clicked(bool)", self.onImportWeightsFolder)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        for widgetName, parameter in FOLDER_FIELDS.items():
            getattr(self.ui, widgetName).currentPathChanged.connect(
                lambda path, parameter=parameter: self.onFolderChanged(parameter, path))

        self.initializeParameterNode()

    def cleanup(self):
        if self.logic is None:  # an unsupported Slicer: setup stopped early
            return
        self.pollTimer.stop()
        if self.run is not None:
            self.run.kill()  # no orphan analysis when Slicer closes (the timer that would finish a cancel stops here)
        self.removeObservers()

    def enter(self):
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self):
        # A running analysis goes on (the timer keeps polling); only the GUI connection stops.
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # In the .ui file, the dynamic property "SlicerParameterName" names each connected widget's parameter.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.ui.studySelector.setCurrentItem(self.logic.studyItem(self._parameterNode.studyInstanceUID))
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        """Show the input that applies, and allow a run when its study is chosen (Cancel is always allowed)."""
        if not self._parameterNode:
            return
        for widgetName, parameter in FOLDER_FIELDS.items():
            widget, value = getattr(self.ui, widgetName), getattr(self._parameterNode, parameter)
            if widget.currentPath != value:
                widget.currentPath = value
        fromFolder = self._parameterNode.inputSource == FOLDER_INPUT
        for widget in (self.ui.dicomFolderLabel, self.ui.dicomFolderPathLineEdit):
            widget.visible = fromFolder
        for widget in (self.ui.studyLabel, self.ui.studySelector):
            widget.visible = not fromFolder
        studyChosen = chosenFolder(self._parameterNode.dicomFolder) if fromFolder else self._parameterNode.studyInstanceUID
        self.ui.analyzeButton.enabled = bool(studyChosen) or self.run is not None
        self.ui.analyzeButton.toolTip = ("Analyse the whole study in the background" if studyChosen
                                         else "Choose the study first")

    def onFolderChanged(self, parameter, path):
        if self._parameterNode and getattr(self._parameterNode, parameter) != path:
            setattr(self._parameterNode, parameter, path)

    def onStudyItemChanged(self, itemID):
        if self._parameterNode:
            self._parameterNode.studyInstanceUID = self.logic.studyInstanceUID(itemID)

    def onAnalyzeButton(self):
        if self.run is not None:  # the button reads "Cancel" while an analysis runs
            self.run.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        if not self.ensureRequirements():
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the analysis.", waitCursor=True):
            self.studyFolder = self.logic.studyFolder(self._parameterNode)
            self.run = self.logic.startAnalysis(self.studyFolder, self.logic.newOutputFolder(self._parameterNode),
                                                weightsFolder=chosenFolder(self._parameterNode.weightsFolder),
                                                device=self._parameterNode.device,
                                                lgeThresholdSD=self._parameterNode.lgeThresholdSD,
                                                seriesChoices=self._parameterNode.seriesChoices)
            self.setRunning(True)
            self.ui.statusLabel.text = "Starting the analysis (loading PyTorch and the models)..."
            self.pollTimer.start()

    def ensureRequirements(self):
        """True when the Python packages are there, after installing the missing ones if the user agrees."""
        from CMRFoundationLib.installation import install_plan

        missing = self.logic.missingRequirements()
        if not missing:
            return True
        with slicer.util.tryWithErrorDisplay("Cannot install PyTorch."):  # shows the reason, then stops here
            self.logic.checkPyTorchExtension(missing)
        if not slicer.util.confirmOkCancelDisplay(
                "CMR Foundation needs these Python packages, which will be downloaded and installed now "
                "(PyTorch alone can take several minutes and a few GB):\n\n" + "\n".join(install_plan(missing)),
                windowTitle="Install Python packages"):
            self.ui.statusLabel.text = "The analysis needs its Python packages; nothing was started."
            return False
        self.ui.statusLabel.text = "Installing Python packages..."
        slicer.app.processEvents()
        with slicer.util.tryWithErrorDisplay("Failed to install the Python packages.", waitCursor=True):
            restart = self.logic.installRequirements(missing)
        if restart:  # this Slicer still runs the versions it imported before (e.g. pydicom)
            self.ui.statusLabel.text = "Python packages installed; restart Slicer before the analysis."
            if slicer.util.confirmYesNoDisplay(
                    f"Updated {', '.join(restart)}, which this Slicer session had already loaded. Slicer must "
                    "restart before the analysis. Restart now?", windowTitle="Restart Slicer"):
                slicer.util.restart()
            return False
        self.ui.statusLabel.text = "Python packages installed."
        return True

    def onPollTimer(self):
        from CMRFoundationLib.runner import CANCELLED

        for event in self.run.poll():
            self.ui.progressBar.value = round(100 * event.fraction)
            self.ui.statusLabel.text = event.message
        if self.run.is_running:
            return
        self.pollTimer.stop()
        result, self.run = self.run.result, None
        self.setRunning(False)
        if result.succeeded:
            self.ui.statusLabel.text = "Loading the results into the scene..."
            slicer.app.processEvents()  # show it before the load holds the event loop
            with slicer.util.tryWithErrorDisplay("The analysis finished but its results could not be loaded.",
                                                 waitCursor=True):
                self.logic.loadResults(result.out_dir, self.studyFolder)
                self.reportPath = result.report_html
                self.ui.openReportButton.enabled = self.reportPath is not None
                self.ui.statusLabel.text = f"Done: {result.message}."
        elif result.status == CANCELLED:
            self.ui.statusLabel.text = result.message
        else:
            self.ui.statusLabel.text = f"Failed: {result.message}"
            slicer.util.errorDisplay(f"The analysis failed: {result.message}", detailedText=result.log)

    def setRunning(self, running):
        self.ui.analyzeButton.text = "Cancel" if running else "Analyze study"
        if running:
            self.ui.progressBar.value = 0
            self.ui.openReportButton.enabled = False
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                       self.ui.advancedCollapsibleButton):
            widget.enabled = not running
        self.updateGUIFromParameterNode()

    def onExportButton(self):
        node, folder = self._parameterNode.exportSegmentation, chosenFolder(self._parameterNode.labelFolder)
        if node is None or folder is None:
            slicer.util.errorDisplay("Choose a segmentation and a label folder to export to.")
            return
        with slicer.util.tryWithErrorDisplay(f"Could not export {node.GetName()} as training labels.", waitCursor=True):
            cases = self.logic.exportTrainingLabels(node, folder)
            self.ui.statusLabel.text = f"Exported {len(cases)} case(s) to {folder}: {', '.join(cases)}"

    def onOpenReport(self):
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(self.reportPath)))

    def onImportWeightsFile(self):
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Import CMR Foundation weights", "",
                                              "Weights archive or task manifest (*.zip *.json)")
        if path:
            self.importWeights(path)

    def onImportWeightsFolder(self):
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Import a CMR Foundation weights folder")
        if path:
            self.importWeights(path)

    def importWeights(self, path):
        with slicer.util.tryWithErrorDisplay("Failed to import the weights.", waitCursor=True):
            folder, tasks = self.logic.importWeights(path)
            self._parameterNode.weightsFolder = str(folder)
            self.ui.statusLabel.text = f"Imported verified weights of {len(tasks)} task(s) into {folder}: {', '.join(tasks)}."


class CMRFoundationLogic(ScriptedLoadableModuleLogic):
    """Glue between Slicer and CMRFoundationLib; holds no image processing of its own."""

    def getParameterNode(self):
        return CMRFoundationParameterNode(super().getParameterNode())

    def indexStudy(self, folder):
        from CMRFoundationLib.dicom import index_study

        return index_study(folder)

    # First use

    def missingRequirements(self):
        from CMRFoundationLib.installation import missing_requirements

        return missing_requirements()

    def installRequirements(self, missing):
        """Install the (requirement, why) pairs of missingRequirements(): torch through the PyTorch
        extension, the rest pinned by the extension's constraints file. Returns the modules this
        Slicer session had imported at an older version (Slicer must restart to use the new one)."""
        from CMRFoundationLib.installation import pip_arguments, restart_needed

        restart = restart_needed(missing, sys.modules)
        for requirement, _ in missing:
            if requirement.module == "torch":
                self.installTorch(requirement)
        others = [requirement for requirement, _ in missing if requirement.module != "torch"]
        if others:
            slicer.util.pip_install(pip_arguments(others))
        return restart

    @staticmethod
    def checkPyTorchExtension(missing):
        """Raise, naming what to do, when torch must be installed and the PyTorch extension is not there."""
        if any(requirement.module == "torch" for requirement, _ in missing):
            try:
                import PyTorchUtils  # noqa: F401
            except ModuleNotFoundError:
                raise RuntimeError("CMR Foundation installs PyTorch through the PyTorch extension (it picks the build "
                                   "that suits the GPU). Install the PyTorch extension from the Extensions Manager, "
                                   "restart Slicer, and analyse again.") from None

    def installTorch(self, requirement):
        """PyTorch through the PyTorch extension, as the extension's dependency (EXTENSION_DEPENDS)."""
        self.checkPyTorchExtension([(requirement, "")])
        import PyTorchUtils

        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=f">={requirement.minimum}")
        if torch is None:
            raise RuntimeError("PyTorch was not installed")

    def userWeightsFolder(self):
        """Imported weights live beside Slicer's settings, shared by the Slicer versions installed."""
        return Path(slicer.app.slicerUserSettingsFilePath).parent / "CMRFoundation" / "Weights"

    def importWeights(self, source):
        """Verify and copy weights into userWeightsFolder(); (that folder, the tasks imported)."""
        from CMRFoundationLib.installation import import_weights

        folder = self.userWeightsFolder()
        return folder, import_weights(source, folder)

    # The study

    @staticmethod
    def studyInstanceUID(itemID):
        """The StudyInstanceUID of a subject hierarchy item's study (the item, or the study above it); "" if none."""
        shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
        studyLevel = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
        while itemID != shNode.GetInvalidItemID() and shNode.GetItemLevel(itemID) != studyLevel:
            itemID = shNode.GetItemParent(itemID)
        if itemID == shNode.GetInvalidItemID():
            return ""
        return shNode.GetItemUID(itemID, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName())

    @staticmethod
    def studyItem(studyInstanceUID):
        shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
        if not studyInstanceUID:
            return shNode.GetInvalidItemID()
        return shNode.GetItemByUID(slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName(), studyInstanceUID)

    def studyFolder(self, parameterNode):
        """What to analyse: the DICOM folder chosen, or a file list of the loaded study's files."""
        if parameterNode.inputSource == FOLDER_INPUT:
            folder = chosenFolder(parameterNode.dicomFolder)
            if folder is None:
                raise ValueError("Choose the study's DICOM folder.")
            return folder
        return self.loadedStudyFiles(parameterNode.studyInstanceUID)

    def loadedStudyFiles(self, studyInstanceUID):
        """The files, in Slicer's DICOM database, of the study's series loaded in the scene, as a file list
        (analysed where they are; the results then attach to those series' volumes)."""
        from CMRFoundationLib.dicom import write_file_list
        from CMRFoundationLib.scene.loaded import loaded_series

        if not studyInstanceUID:
            raise ValueError("Choose a study that was loaded from DICOM (it needs a StudyInstanceUID).")
        database = slicer.dicomDatabase
        if not database or not database.isOpen:
            raise ValueError("Slicer's DICOM database is not open; open it in the DICOM module, or analyse a folder.")
        series = loaded_series(slicer.mrmlScene, studyInstanceUID)
        if not series:
            raise ValueError("No series of this study is loaded: load the study's series in the DICOM module first.")
        files = [path for seriesUID in series for path in database.filesForSeries(seriesUID)]
        if not files:
            raise ValueError(f"The DICOM database holds no files of the series loaded from study {studyInstanceUID}.")
        return write_file_list(files, Path(slicer.util.tempDirectory()) / "study")

    def newOutputFolder(self, parameterNode):
        """A new folder for this analysis under the output folder chosen (default: <default scene path>/CMRFoundation)."""
        from CMRFoundationLib.runner import new_output_folder

        root = chosenFolder(parameterNode.outputFolder) or Path(slicer.app.defaultScenePath) / "CMRFoundation"
        if parameterNode.inputSource == FOLDER_INPUT:
            name = Path(parameterNode.dicomFolder).name
        else:
            name = slicer.mrmlScene.GetSubjectHierarchyNode().GetItemName(self.studyItem(parameterNode.studyInstanceUID))
        return new_output_folder(root, name)

    # The analysis

    @staticmethod
    def pythonExecutable():
        """Slicer's Python launcher, which runs the analysis process (as Slicer's AI extensions run theirs)."""
        python = shutil.which("PythonSlicer")
        if not python:
            raise RuntimeError("Slicer's Python (PythonSlicer) was not found")
        return python

    @staticmethod
    def launchProcess(command):
        """Start the analysis process as Slicer's AI extensions start theirs: PythonSlicer through
        launchConsoleProcess, in the environment Slicer started in (the launcher sets up its own)."""
        from CMRFoundationLib.runner import child_environment

        return slicer.util.launchConsoleProcess(command,
                                                updateEnvironment=child_environment(slicer.util.startupEnvironment()))

    def startAnalysis(self, studyFolder, outputFolder, weightsFolder=None, device="auto", lgeThresholdSD=5.0,
                      seriesChoices=""):
        """Start `cmrfm analyze` as a separate process; the returned AnalysisRun is polled (poll, is_running, result)."""
        from CMRFoundationLib.runner import AnalysisRun, parse_series_choices

        run = AnalysisRun(studyFolder, outputFolder, weights_dir=weightsFolder, device=device, lge_n_sd=lgeThresholdSD,
                          series=parse_series_choices(seriesChoices), python=self.pythonExecutable(),
                          launch=self.launchProcess)
        logging.info("CMRFoundation: " + " ".join(run.command()))
        run.start()
        return run

    def loadResults(self, analysisFolder, studyFolder):
        """The analysis's volumes, segmentations, markups and table into the scene (CMRFoundationLib.scene);
        series the user loaded keep their volumes, which the results attach to."""
        from CMRFoundationLib.scene import load_analysis

        return load_analysis(slicer.mrmlScene, analysisFolder, studyFolder)

    def exportTrainingLabels(self, segmentationNode, labelFolder):
        """A corrected segmentation with its images into a de-identified training label folder; the case ids."""
        from CMRFoundationLib.scene import export_training_labels

        return export_training_labels(slicer.mrmlScene, segmentationNode, labelFolder)

    # The self-test

    @staticmethod
    def pytestFolder():
        """The pytest suite, beside the module in a source checkout (not part of the installed extension)."""
        return Path(__file__).resolve().parents[1] / "Testing" / "Python"

    def runPytest(self, files=SLICER_PYTEST_FILES, extraArguments=()):
        """Run pytest files of the suite inside Slicer; pytest's exit code (0: all passed)."""
        from CMRFoundationLib.installation import pip_arguments_for

        folder = self.pytestFolder()
        if not folder.is_dir():
            raise RuntimeError(f"The pytest suite is not beside the module ({folder}); run the self-test from a "
                               "source checkout of CMRFoundation (README: Develop and test in Slicer).")
        try:
            import pytest
        except ModuleNotFoundError:
            slicer.util.pip_install(pip_arguments_for(["pytest"]))
            import pytest
        root = folder.parents[1]  # its pyproject.toml configures pytest
        arguments = ["-q", "-p", "no:cacheprovider", "-p", "no:faulthandler", "--rootdir", str(root),
                     "-c", str(root / "pyproject.toml"), *(str(folder / name) for name in files), *extraArguments]
        return int(pytest.main(arguments))

    def analyzeAndLoad(self, studyFolder, outputFolder, timeout=None, **choices):
        """Blocking run then load, for scripts and tests (the widget polls instead); the RunResult."""
        result = self.startAnalysis(studyFolder, outputFolder, **choices).wait(timeout)
        if not result.succeeded:
            raise RuntimeError(f"analysis of {studyFolder} {result.status}: {result.message}\n{result.log}")
        self.loadResults(result.out_dir, studyFolder)
        return result


class CMRFoundationTest(ScriptedLoadableModuleTest):
    """The self-test: the pytest suite's scene tests, run here against Slicer's own MRML, logics, Python
    packages and DICOM module (CI runs them against slicer-core), then whole analyses through the module.

    From a source checkout, in one command (README, "Develop and test in Slicer"):
      Slicer --no-splash --testing --additional-module-paths REPO/CMRFoundation
             --python-code "import slicer.testing; slicer.testing.runUnitTest(['REPO/CMRFoundation'], 'CMRFoundation')"
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        import unittest

        for test in (self.test_pytest_suite_in_slicer, self.test_sample_study_analysed_into_the_scene,
                     self.test_database_study_analysed_onto_its_loaded_volumes):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skipped:
                logging.warning(f"{test.__name__} skipped: {skipped}")

    def installRequirements(self, logic):
        unsupported = unsupportedPythonMessage(sys.version_info)
        if unsupported:
            self.fail(unsupported)
        restart = logic.installRequirements(logic.missingRequirements())
        if restart:
            self.fail(f"Updated {', '.join(restart)}, which this session had loaded: restart Slicer and test again.")

    def makeSampleStudy(self):
        import tempfile

        from CMRFoundationLib.synthetic.study import make_sample_study

        folder = os.path.join(tempfile.mkdtemp(), "study")
        return folder, make_sample_study(folder, seed=1, frames=4)

    def test_pytest_suite_in_slicer(self):
        logic = CMRFoundationLogic()
        if not logic.pytestFolder().is_dir():  # a built extension: the suite is in the source checkout only
            self.skipTest(f"no pytest suite at {logic.pytestFolder()}; run the self-test from a source checkout")
        self.installRequirements(logic)
        self.delayDisplay("Running the pytest scene tests in Slicer (a few minutes on a CPU)")
        self.assertEqual(logic.runPytest(), 0, "pytest failures: see the Python console")

    def test_sample_study_analysed_into_the_scene(self):
        """First use, then the sample study through the analysis process and the scene layer."""
        logic = CMRFoundationLogic()
        self.installRequirements(logic)
        folder, _ = self.makeSampleStudy()
        self.delayDisplay("Analysing the sample study (about half a minute on a CPU)")
        result = logic.analyzeAndLoad(os.path.join(folder, "DICOM"), os.path.join(folder, "analysis"),
                                      timeout=900, device="cpu")
        self.assertTrue(result.succeeded, result.message)
        self.assertGreater(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 0)
        self.assertGreater(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode"), 0)
        self.delayDisplay("Sample study analysed and loaded")

    def test_database_study_analysed_onto_its_loaded_volumes(self):
        """A study loaded by Slicer's DICOM module (with the pydicom the install left) is analysed from its
        loaded series' files, and the results attach to the loaded volumes instead of adding them again."""
        from DICOMLib import DICOMUtils

        logic = CMRFoundationLogic()
        self.installRequirements(logic)
        folder, truth = self.makeSampleStudy()
        lgeNumber = next(s["number"] for s in truth["series"] if s["image_type"] == "lge")
        with DICOMUtils.TemporaryDICOMDatabase() as database:
            DICOMUtils.importDicom(os.path.join(folder, "DICOM"), database)
            patient = database.patients()[0]
            self.assertTrue(DICOMUtils.loadPatientByUID(patient))
            studyUID = database.studiesForPatient(patient)[0]
            volumesBefore = {node.GetID() for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")}
            self.delayDisplay("Analysing the study loaded from the DICOM database")
            run = logic.startAnalysis(logic.loadedStudyFiles(studyUID), os.path.join(folder, "analysis"), device="cpu")
            result = run.wait(900)
            self.assertTrue(result.succeeded, result.message + "\n" + result.log)
            loaded = logic.loadResults(result.out_dir, None)
        lge = loaded.series[f"S{lgeNumber:03d}"]
        self.assertTrue(lge.users, "the LGE volume loaded from DICOM was not used")
        for series in loaded.series.values():
            if series.users:
                self.assertIn(series.images.volume.GetID(), volumesBefore)
        self.delayDisplay("Results attached to the volumes loaded from DICOM")
