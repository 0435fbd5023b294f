"""The DICOM SR code table, pinned.

Readers of our SR (PACS, reporting systems, other sites' scripts) match measurements by
code value and scheme, not by our names, so a code, scheme, meaning or unit must never
change by accident. The expected table below is written out on purpose: a change to
``CMRFoundationLib/dicom/sr.py`` must be made here too, deliberately.
"""

from __future__ import annotations

import pytest

from CMRFoundationLib.dicom import sr
from CMRFoundationLib.dicom.sr import (
    AHA_SEGMENT_CODES,
    UNIT_MEANINGS,
    Measurement,
)
from CMRFoundationLib.terminology import PRIVATE_SCHEME

P = "99CMRFM"

# name: (code value, scheme, code meaning, UCUM unit, default finding site)
EXPECTED_MEASUREMENTS = {
    "lv_edv": ("8821-1", "LN", "Left Ventricular ED Volume", "ml", "lv_blood_pool"),
    "lv_esv": ("8823-7", "LN", "Left Ventricular ES Volume", "ml", "lv_blood_pool"),
    "lv_sv": ("90096001", "SCT", "Stroke Volume", "ml", "lv_blood_pool"),
    "lv_ef": ("8811-2", "LN", "Left ventricular ejection fraction by MR", "%", "lv_blood_pool"),
    "lv_mass": ("18087-7", "LN", "Left Ventricle Mass", "g", "lv_myocardium"),
    "rv_edv": ("8822-9", "LN", "Right Ventricular ED Volume", "ml", "rv_blood_pool"),
    "rv_esv": ("8824-5", "LN", "Right Ventricular ES Volume", "ml", "rv_blood_pool"),
    "rv_sv": ("90096001", "SCT", "Stroke Volume", "ml", "rv_blood_pool"),
    "rv_ef": ("8818-7", "LN", "Right ventricular ejection fraction by MR", "%", "rv_blood_pool"),
    "la_volume": ("122408", "DCM", "Left Atrial ES Volume", "ml", "la_blood_pool"),
    "wall_thickness": ("122445", "DCM", "Wall Thickness", "mm", "lv_myocardium"),
    "t1": ("113063", "DCM", "T1", "ms", "lv_myocardium"),
    "t2": ("113065", "DCM", "T2", "ms", "lv_myocardium"),
    "bsa": ("8277-6", "LN", "BSA", "m2", None),
    "lv_edv_index": ("LVEDVI", P, "LV end-diastolic volume index", "ml/m2", "lv_blood_pool"),
    "lv_esv_index": ("LVESVI", P, "LV end-systolic volume index", "ml/m2", "lv_blood_pool"),
    "lv_sv_index": ("LVSVI", P, "LV stroke volume index", "ml/m2", "lv_blood_pool"),
    "lv_mass_index": ("LVMI", P, "LV mass index", "g/m2", "lv_myocardium"),
    "rv_edv_index": ("RVEDVI", P, "RV end-diastolic volume index", "ml/m2", "rv_blood_pool"),
    "rv_esv_index": ("RVESVI", P, "RV end-systolic volume index", "ml/m2", "rv_blood_pool"),
    "rv_sv_index": ("RVSVI", P, "RV stroke volume index", "ml/m2", "rv_blood_pool"),
    "lge_extent": ("LGE-EXTENT", P, "Enhanced myocardium, percent of LV myocardium", "%", "enhanced_myocardium"),
    "lge_volume": ("LGE-VOLUME", P, "Enhanced myocardial volume", "ml", "enhanced_myocardium"),
}

EXPECTED_UNIT_MEANINGS = {
    "ml": "milliliter",
    "%": "percent",
    "g": "gram",
    "mm": "millimeter",
    "ms": "millisecond",
    "ml/m2": "milliliter per square meter",
    "g/m2": "gram per square meter",
    "m2": "square meter",
}

# DICOM CID 3717 Myocardial Wall Segments (SNOMED CT), AHA 17-segment numbering.
EXPECTED_AHA_CODES = {
    1: ("264850008", "left ventricle basal anterior segment"),
    2: ("396482007", "left ventricle basal anteroseptal segment"),
    3: ("396646008", "left ventricle basal inferoseptal segment"),
    4: ("264846001", "left ventricle basal inferior segment"),
    5: ("396652009", "left ventricle basal inferolateral segment"),
    6: ("396654005", "left ventricle basal anterolateral segment"),
    7: ("264848000", "left ventricle mid anterior segment"),
    8: ("396647004", "left ventricle mid anteroseptal segment"),
    9: ("396649001", "left ventricle mid inferoseptal segment"),
    10: ("264847005", "left ventricle mid inferior segment"),
    11: ("396655006", "left ventricle mid inferolateral segment"),
    12: ("396656007", "left ventricle mid anterolateral segment"),
    13: ("264844003", "left ventricle apical anterior segment"),
    14: ("264845002", "left ventricle apical septal segment"),
    15: ("264849008", "left ventricle apical inferior segment"),
    16: ("264853005", "left ventricle apical lateral segment"),
    17: ("128564006", "Apex of left ventricle"),
}


def test_the_private_scheme_designator():
    assert PRIVATE_SCHEME == P


def test_every_measurement_name_has_its_pinned_code_and_unit():
    assert set(sr.known_measurements()) == set(EXPECTED_MEASUREMENTS)
    for name, (value, scheme, meaning, unit, site) in EXPECTED_MEASUREMENTS.items():
        concept, actual_unit, actual_site = sr.known_measurements()[name]
        assert (concept.value, concept.scheme_designator, concept.meaning) == (value, scheme, meaning), name
        assert (actual_unit, actual_site) == (unit, site), name


def test_unit_meanings_cover_every_unit_of_the_table():
    assert UNIT_MEANINGS == EXPECTED_UNIT_MEANINGS
    assert {row[3] for row in EXPECTED_MEASUREMENTS.values()} <= set(UNIT_MEANINGS)


def test_aha_segment_codes():
    assert {n: (c.value, c.scheme_designator, c.meaning) for n, c in AHA_SEGMENT_CODES.items()} == {
        n: (value, "SCT", meaning) for n, (value, meaning) in EXPECTED_AHA_CODES.items()}


@pytest.mark.parametrize("name", sorted(EXPECTED_MEASUREMENTS))
def test_a_measurement_takes_the_tables_code_and_refuses_another_unit(name):
    value, scheme, meaning, unit, _ = EXPECTED_MEASUREMENTS[name]
    concept = sr._concept(Measurement(name, 1.0, unit))
    assert (concept.value, concept.scheme_designator, concept.meaning) == (value, scheme, meaning)
    other_unit = "mm" if unit != "mm" else "ml"
    with pytest.raises(ValueError, match="given in"):
        sr._concept(Measurement(name, 1.0, other_unit))
