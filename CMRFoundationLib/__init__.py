"""CMRFoundationLib: the Qt-free library behind the CMRFoundation Slicer extension.

Reading cardiac MR studies (DICOM, NIfTI, NRRD), the foundation model and its task
heads, inference, clinical measurements and the synthetic study generator. Nothing in
this package imports Qt or Slicer, so it runs in plain Python as well as in Slicer.
"""

__version__ = "0.1.0"

from .stack import ImageStack, SeriesInfo  # noqa: E402,F401
