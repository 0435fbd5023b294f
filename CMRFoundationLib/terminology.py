"""Coded concepts, display names and colours of every structure we segment or mark.

One table, ``STRUCTURES``, feeds the DICOM SEG (segmented property category and type),
the DICOM SR (finding sites) and the Slicer module (segment terminology tags, colours),
so a structure is described the same way everywhere.

Where the codes come from:

* DICOM PS3.16 context groups, read from pydicom's copy of the standard
  (``pydicom.sr.codedict.codes``): CID 7150 Segmentation Property Categories (Tissue
  85756007, Morphologically Abnormal Structure 49755003, Spatial and Relational Concept
  309825002), CID 7151 Segmentation Property Types (Left ventricle 87878005, Right
  ventricle 53085002, Left atrium 82471001, Right atrium 73829009, Scar tissue
  12402003) and CID 12305 Basic Echo Anatomic Sites (Left ventricle myocardium 49848007).
* 3D Slicer's "Segmentation category and type - DICOM master list"
  (Slicer/Slicer, Modules/Loadable/Terminologies/Resources/
  SegmentationCategoryTypeModifier-DICOM-Master.json), which has the same chamber and
  scar codes. Slicer (and dcmqi) file them under "Anatomical Structure" SCT 123037004;
  current DICOM CID 7150 (and pydicom's ``codes.SCT.AnatomicalStructure``) say 91723000.
  We use 123037004 so that Slicer recognises our segments.

Neither source has a code for "cavity" or "blood pool" of a chamber: the blood pools
use the chamber codes (as Slicer's TotalSegmentator mapping does for its heart
chambers); the segment label (display name) says "blood pool", and the myocardium is a
segment of its own. Microvascular obstruction and the RV insertion points have no
standard code at all and use the private coding scheme ``PRIVATE_SCHEME`` (DICOM PS3.3
8.2: private designators start with "99"), never made-up SNOMED CT codes.

Colours follow the usual CMR analysis convention (LV blood pool red, LV myocardium
green, RV blood pool yellow) rather than Slicer's chamber colours, which are four
near-identical browns that cannot be told apart on an image overlay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99CMRFM"
PRIVATE_SCHEME_NAME = "CMRFoundation private codes"

# (coding scheme designator, code value, code meaning)
Concept = tuple[str, str, str]

ANATOMICAL_STRUCTURE: Concept = ("SCT", "123037004", "Anatomical Structure")
TISSUE: Concept = ("SCT", "85756007", "Tissue")
MORPHOLOGICALLY_ABNORMAL: Concept = ("SCT", "49755003", "Morphologically Abnormal Structure")
SPATIAL_CONCEPT: Concept = ("SCT", "309825002", "Spatial and Relational Concept")


@dataclass(frozen=True)
class Structure:
    name: str  # our name, as in tasks.py
    display_name: str  # segment label / what users read
    category: Concept
    type: Concept
    color: tuple[int, int, int]  # recommended display RGB, 0-255


_TABLE = (
    Structure("lv_blood_pool", "LV blood pool", ANATOMICAL_STRUCTURE, ("SCT", "87878005", "Left ventricle"), (220, 40, 40)),
    Structure("lv_myocardium", "LV myocardium", ANATOMICAL_STRUCTURE, ("SCT", "49848007", "Left ventricle myocardium"), (60, 180, 75)),
    Structure("rv_blood_pool", "RV blood pool", ANATOMICAL_STRUCTURE, ("SCT", "53085002", "Right ventricle"), (255, 210, 0)),
    Structure("la_blood_pool", "LA blood pool", ANATOMICAL_STRUCTURE, ("SCT", "82471001", "Left atrium"), (70, 130, 230)),
    Structure("ra_blood_pool", "RA blood pool", ANATOMICAL_STRUCTURE, ("SCT", "73829009", "Right atrium"), (170, 80, 200)),
    Structure("enhanced_myocardium", "Enhanced myocardium (LGE)", TISSUE, ("SCT", "12402003", "Scar tissue"), (255, 140, 0)),
    Structure(
        "microvascular_obstruction",
        "Microvascular obstruction",
        MORPHOLOGICALLY_ABNORMAL,
        (PRIVATE_SCHEME, "MVO", "Microvascular obstruction"),
        (30, 144, 255),
    ),
    Structure(
        "anterior_rv_insertion",
        "Anterior RV insertion point",
        SPATIAL_CONCEPT,
        (PRIVATE_SCHEME, "RVIP-ANT", "Anterior right ventricular insertion point"),
        (255, 0, 255),
    ),
    Structure(
        "inferior_rv_insertion",
        "Inferior RV insertion point",
        SPATIAL_CONCEPT,
        (PRIVATE_SCHEME, "RVIP-INF", "Inferior right ventricular insertion point"),
        (0, 255, 255),
    ),
)
STRUCTURES: dict[str, Structure] = {s.name: s for s in _TABLE}
# Other names the pipeline uses for a structure in the table.
ALIASES = {"infarct": "enhanced_myocardium"}

# Slicer looks a terminology entry up in a loaded context and rejects codes it lacks
# (our myocardium, MVO and landmark codes are not in Slicer's DICOM master list), so the
# Slicer module loads this context (slicer_terminology_context) and tags segments with it.
SLICER_CONTEXT_NAME = "Segmentation category and type - CMRFoundation"
SLICER_ANATOMIC_CONTEXT_NAME = "Anatomic codes - DICOM master list"


class SegmentCodes(NamedTuple):
    category: Code
    type: Code


def structure(name: str) -> Structure:
    """The table entry of ``name`` (or of its alias); a clear error listing the known names."""
    try:
        return STRUCTURES[ALIASES.get(name, name)]
    except KeyError:
        known = ", ".join([*STRUCTURES, *ALIASES])
        raise KeyError(f"unknown structure {name!r}; known structures: {known}") from None


def coded_concepts(name: str) -> SegmentCodes:
    """Segmented property category and type of ``name`` as pydicom Codes (highdicom takes them)."""
    entry = structure(name)
    return SegmentCodes(_code(entry.category), _code(entry.type))


def structure_for_codes(type_scheme: str, type_value: str) -> str | None:
    """Our name for a segmented property type (e.g. from a SEG written elsewhere), None if unknown."""
    for entry in _TABLE:
        if entry.type[:2] == (type_scheme, type_value):
            return entry.name
    return None


def slicer_terminology_entry(name: str) -> str:
    """The value for ``segment.SetTag("TerminologyEntry", ...)`` in Slicer.

    Slicer's format (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry) is seven
    "~"-separated fields: context name, category, type, type modifier, anatomic context
    name, anatomic region, anatomic region modifier; each coded field is
    "scheme^value^meaning", "^^" when empty.
    """
    entry = structure(name)
    fields = [SLICER_CONTEXT_NAME, "^".join(entry.category), "^".join(entry.type), "^^", SLICER_ANATOMIC_CONTEXT_NAME, "^^", "^^"]
    return "~".join(fields)


def slicer_terminology_context() -> dict:
    """Our structures as a Slicer terminology context (dcmqi segment-context JSON).

    Save it as JSON and load it once with Slicer's
    ``slicer.modules.terminologies.logic().LoadTerminologyFromFile(path)`` so that the
    entries of slicer_terminology_entry resolve, with our names and colours.
    """
    categories: dict[Concept, list[dict]] = {}
    for entry in _TABLE:
        categories.setdefault(entry.category, []).append(
            {**_json_code(entry.type), "recommendedDisplayRGBValue": list(entry.color), "3dSlicerLabel": entry.display_name}
        )
    return {
        "SegmentationCategoryTypeContextName": SLICER_CONTEXT_NAME,
        "@schema": "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#",
        "SegmentationCodes": {
            "Category": [{**_json_code(category), "showAnatomy": False, "Type": types} for category, types in categories.items()]
        },
    }


def declare_private_scheme(dataset: Dataset) -> None:
    """List PRIVATE_SCHEME in the Coding Scheme Identification Sequence if any code uses it.

    DICOM asks every private coding scheme a file uses to be identified there (PS3.3 C.12.1).
    """
    if any(e.keyword == "CodingSchemeDesignator" and e.value == PRIVATE_SCHEME for e in dataset.iterall()):
        item = Dataset()
        item.CodingSchemeDesignator = PRIVATE_SCHEME
        item.CodingSchemeName = PRIVATE_SCHEME_NAME
        item.CodingSchemeResponsibleOrganization = "CMRFoundation"
        dataset.CodingSchemeIdentificationSequence = [item]


def _code(concept: Concept) -> Code:
    scheme, value, meaning = concept
    return Code(value, scheme, meaning)


def _json_code(concept: Concept) -> dict:
    scheme, value, meaning = concept
    return {"CodingSchemeDesignator": scheme, "CodeValue": value, "CodeMeaning": meaning}
