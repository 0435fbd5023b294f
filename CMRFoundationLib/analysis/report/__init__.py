"""``report.html``: one self-contained page of an analysis that a clinician can read offline.

Everything is inline, so the file can be mailed, archived or opened without a network:
charts are SVG (charts.py), images are PNG in ``data:`` URIs (images.py, encoded with
Pillow), styling is a short CSS block, and there is no script at all. All text that
comes from the study (DICOM headers, and reasons or flags that quote them) is
HTML-escaped (markup.py).

What it shows, in reading order (page.py): patient and study facts, software and weights,
a research-use banner; the quality flags (errors and warnings first, information folded
away); each part of the analysis (function table and volume curves, short-axis images
at ED and ES with the RV insertion points, AHA bull's-eye plots, disease and LGE
probabilities, atria, LGE and map images) or, for a part that did not run, why; and
every series read with what it was used for. The bull's-eye layout and colours are
measurements.bullseye's, shared with the Slicer scene.

Deliberately left out: normal ranges. None are validated for this software, and an
invented range would read as a validated one. Images are shown as stored (rows down,
columns right), cropped to the heart, never flipped or rotated.
"""

from ...measurements.bullseye import COLOUR_STOPS, NO_DATA, SEGMENT_PLACES
from .charts import bullseye_svg
from .images import png_bytes
from .markup import _css
from .page import PART_RENDERERS, REPORT_FILE, render_report, write_html_report

__all__ = [
    "COLOUR_STOPS",
    "NO_DATA",
    "PART_RENDERERS",
    "REPORT_FILE",
    "SEGMENT_PLACES",
    "_css",
    "bullseye_svg",
    "png_bytes",
    "render_report",
    "write_html_report",
]
