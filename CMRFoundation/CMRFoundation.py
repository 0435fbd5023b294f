"""CMRFoundation: the Slicer module.

The widget stays thin; everything that does work lives in the Qt-free CMRFoundationLib,
which also runs in plain Python (`cmrfm` command) and is tested there.
"""

import os

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

METHOD_CITATION = (
    'A. J. Jacob et al., "Towards a vision foundation model for comprehensive assessment of '
    'Cardiac MRI", arXiv:2410.01665, 2024.'
)


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
            "points and the measurements of a CMR report. Load a study, then 'Analyze study'."
        )
        self.parent.acknowledgementText = "Method: " + METHOD_CITATION


class CMRFoundationWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = CMRFoundationLogic()


class CMRFoundationLogic(ScriptedLoadableModuleLogic):
    """Delegates to CMRFoundationLib; holds no image processing of its own."""

    def indexStudy(self, folder):
        from CMRFoundationLib.dicom import index_study

        return index_study(folder)


class CMRFoundationTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_study_is_read()

    def test_sample_study_is_read(self):
        import tempfile

        from CMRFoundationLib.synthetic.study import make_sample_study

        folder = os.path.join(tempfile.mkdtemp(), "study")
        truth = make_sample_study(folder, seed=1, frames=4)
        index = CMRFoundationLogic().indexStudy(os.path.join(folder, "DICOM"))
        self.assertEqual({s.info.series_number for s in index.stacks}, {s["number"] for s in truth["series"]})
        self.delayDisplay("Sample study read")
