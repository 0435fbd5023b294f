"""CMRFoundation: the Slicer module.

The widget stays thin and the logic only glues Slicer to the Qt-free CMRFoundationLib,
which does the work, runs in plain Python as well (`cmrfm` command) and is tested there:
the analysis runs as a separate process (CMRFoundationLib.runner) that a QTimer
polls, so Slicer never freezes, and its results come into the scene through
CMRFoundationLib.scene.

CMRFoundationLib.analysis imports torch, so it is imported only after the first-use
check has made sure it and the other requirements are installed (MONAI is not one:
only training uses it).
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
            "measurements.csv, label maps, DICOM SEG and SR. On first use the Python packages it needs "
            "(PyTorch, MONAI, pydicom, highdicom, safetensors, Pillow) are installed after you confirm. The "
            "weights carried with the extension are small CPU-trained ones; full-size weights can be "
            "imported offline under <i>Advanced</i>.<br><br>"
            "Method: " + METHOD_CITATION
        )
        self.parent.acknowledgementText = "Method: " + METHOD_CITATION


@parameterNodeWrapper
class CMRFoundationParameterNode:
    """The module's choices, saved with the scene. An empty folder reads as Path(".")."""

    inputSource: Annotated[str, Choice([FOLDER_INPUT, SCENE_INPUT])] = FOLDER_INPUT
    dicomFolder: Path
    studyInstanceUID: str  # of the study chosen in the subject hierarchy (set by the widget)
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    weightsFolder: Path  # empty: the weights carried with the extension
    outputFolder: Path  # where each analysis gets a new folder; empty: <default scene path>/CMRFoundation
    lgeThresholdSD: Annotated[float, WithinRange(1.0, 10.0)] = 5.0
    seriesChoices: str  # e.g. "cine_sax=6, lge_sax=10": overrides the automatic series choice
    exportSegmentation: slicer.vtkMRMLSegmentationNode  # a corrected segmentation to export as training labels
    labelFolder: Path  # the training label folder it is added to


def chosenFolder(path: Path) -> Optional[str]:
    """The folder a path parameter holds, None when empty."""
    return None if str(path) in ("", ".") else str(path)


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

        self.initializeParameterNode()

    def cleanup(self):
        self.pollTimer.stop()
        if self.run is not None:
            self.run.cancel()  # no orphan analysis when Slicer closes
        self.removeObservers()

    def enter(self):
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
        fromFolder = self._parameterNode.inputSource == FOLDER_INPUT
        for widget in (self.ui.dicomFolderLabel, self.ui.dicomFolderPathLineEdit):
            widget.visible = fromFolder
        for widget in (self.ui.studyLabel, self.ui.studySelector):
            widget.visible = not fromFolder
        studyChosen = chosenFolder(self._parameterNode.dicomFolder) if fromFolder else self._parameterNode.studyInstanceUID
        self.ui.analyzeButton.enabled = bool(studyChosen) or self.run is not None
        self.ui.analyzeButton.toolTip = ("Analyse the whole study in the background" if studyChosen
                                         else "Choose the study first")

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
        missing = self.logic.missingRequirements()
        if not missing:
            return True
        listed = "\n".join(f"- {requirement.pip_spec} ({why})" for requirement, why in missing)
        if not slicer.util.confirmOkCancelDisplay(
                "CMR Foundation needs these Python packages, which will be downloaded and installed now "
                "(PyTorch alone can take several minutes and a few GB):\n\n" + listed,
                windowTitle="Install Python packages"):
            self.ui.statusLabel.text = "The analysis needs its Python packages; nothing was started."
            return False
        self.ui.statusLabel.text = "Installing Python packages..."
        slicer.app.processEvents()
        with slicer.util.tryWithErrorDisplay("Failed to install the Python packages.", waitCursor=True):
            self.logic.installRequirements(missing)
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
            self._parameterNode.weightsFolder = folder
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
        """Install the (requirement, why) pairs of missingRequirements(), in their order (torch first)."""
        for requirement, _ in missing:
            if requirement.module == "torch":
                self.installTorch(requirement)
            else:
                slicer.util.pip_install(requirement.pip_spec)

    def installTorch(self, requirement):
        """PyTorch through the PyTorch extension when it is there (it picks the CUDA build that suits the GPU)."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            logging.info("PyTorch extension not found: installing the CPU build of PyTorch")
            slicer.util.pip_install(f"{requirement.pip_spec} --index-url https://download.pytorch.org/whl/cpu")
            return
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
        """The folder to analyse: the DICOM folder chosen, or the study's files gathered from the DICOM database."""
        if parameterNode.inputSource == FOLDER_INPUT:
            folder = chosenFolder(parameterNode.dicomFolder)
            if folder is None:
                raise ValueError("Choose the study's DICOM folder.")
            return folder
        return self.gatherStudyFromDatabase(parameterNode.studyInstanceUID)

    def gatherStudyFromDatabase(self, studyInstanceUID):
        """Every series of the study, from Slicer's DICOM database (not only those loaded), in a new temporary folder."""
        from CMRFoundationLib.runner import gather_files

        if not studyInstanceUID:
            raise ValueError("Choose a study that was loaded from DICOM (it needs a StudyInstanceUID).")
        database = slicer.dicomDatabase
        if not database or not database.isOpen:
            raise ValueError("Slicer's DICOM database is not open; open it in the DICOM module, or analyse a folder.")
        files = [path for series in database.seriesForStudy(studyInstanceUID) for path in database.filesForSeries(series)]
        if not files:
            raise ValueError(f"The DICOM database holds no files of study {studyInstanceUID}.")
        return str(gather_files(files, Path(slicer.util.tempDirectory()) / "study"))

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
        """Slicer's Python interpreter, which runs the analysis process (as Slicer's AI extensions run theirs)."""
        return shutil.which("PythonSlicer") or sys.executable

    def startAnalysis(self, studyFolder, outputFolder, weightsFolder=None, device="auto", lgeThresholdSD=5.0,
                      seriesChoices=""):
        """Start `cmrfm analyze` as a separate process; the returned AnalysisRun is polled (poll, is_running, result)."""
        from CMRFoundationLib.runner import AnalysisRun, parse_series_choices

        run = AnalysisRun(studyFolder, outputFolder, weights_dir=weightsFolder, device=device, lge_n_sd=lgeThresholdSD,
                          series=parse_series_choices(seriesChoices), python=self.pythonExecutable())
        logging.info("CMRFoundation: " + " ".join(run.command()))
        run.start()
        return run

    def loadResults(self, analysisFolder, studyFolder):
        """The analysis's volumes, segmentations, markups and table into the scene (CMRFoundationLib.scene)."""
        from CMRFoundationLib.scene import load_analysis

        return load_analysis(slicer.mrmlScene, analysisFolder, studyFolder)

    def exportTrainingLabels(self, segmentationNode, labelFolder):
        """A corrected segmentation with its images into a de-identified training label folder; the case ids."""
        from CMRFoundationLib.scene import export_training_labels

        return export_training_labels(slicer.mrmlScene, segmentationNode, labelFolder)

    def analyzeAndLoad(self, studyFolder, outputFolder, timeout=None, **choices):
        """Blocking run then load, for scripts and tests (the widget polls instead); the RunResult."""
        result = self.startAnalysis(studyFolder, outputFolder, **choices).wait(timeout)
        if not result.succeeded:
            raise RuntimeError(f"analysis of {studyFolder} {result.status}: {result.message}\n{result.log}")
        self.loadResults(result.out_dir, studyFolder)
        return result


class CMRFoundationTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_study_is_read()
        self.setUp()
        self.test_sample_study_analysed_into_the_scene()

    def makeSampleStudy(self):
        import tempfile

        from CMRFoundationLib.synthetic.study import make_sample_study

        folder = os.path.join(tempfile.mkdtemp(), "study")
        return folder, make_sample_study(folder, seed=1, frames=4)

    def test_sample_study_is_read(self):
        folder, truth = self.makeSampleStudy()
        index = CMRFoundationLogic().indexStudy(os.path.join(folder, "DICOM"))
        self.assertEqual({s.info.series_number for s in index.stacks}, {s["number"] for s in truth["series"]})
        self.delayDisplay("Sample study read")

    def test_sample_study_analysed_into_the_scene(self):
        """First use, then the sample study through the analysis process and the scene layer."""
        logic = CMRFoundationLogic()
        logic.installRequirements(logic.missingRequirements())
        folder, _ = self.makeSampleStudy()
        self.delayDisplay("Analysing the sample study (about half a minute on a CPU)")
        result = logic.analyzeAndLoad(os.path.join(folder, "DICOM"), os.path.join(folder, "analysis"),
                                      timeout=900, device="cpu")
        self.assertTrue(result.succeeded, result.message)
        self.assertGreater(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 0)
        self.assertGreater(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode"), 0)
        self.delayDisplay("Sample study analysed and loaded")
