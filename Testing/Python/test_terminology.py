"""The structure terminology: complete for our tasks, standard codes real, Slicer strings well-formed."""

import json

import pytest
from pydicom.sr._concepts_dict import concepts

from CMRFoundationLib.tasks import LANDMARKS, SEGMENTATION, TASKS
from CMRFoundationLib.terminology import (
    PRIVATE_SCHEME,
    SLICER_ANATOMIC_CONTEXT_NAME,
    SLICER_CONTEXT_NAME,
    STRUCTURES,
    coded_concepts,
    slicer_terminology_context,
    slicer_terminology_entry,
    structure,
    structure_for_codes,
)


def task_structure_names():
    for task in TASKS.values():
        if task.kind == SEGMENTATION:
            yield from task.labels[1:]  # index 0 is background
        elif task.kind == LANDMARKS:
            yield from task.labels


@pytest.mark.parametrize("name", sorted(set(task_structure_names())) + ["infarct", "microvascular_obstruction"])
def test_every_task_label_has_codes_a_colour_and_a_name(name):
    entry = structure(name)
    codes = coded_concepts(name)
    for code in codes:
        assert code.value and code.scheme_designator and code.meaning
        assert len(code.value) <= 16 and len(code.meaning) <= 64  # DICOM SH and LO
    assert all(0 <= c <= 255 for c in entry.color) and len(entry.color) == 3
    assert entry.display_name


def test_standard_codes_exist_in_the_dicom_standard():
    # pydicom ships the code tables of DICOM PS3.16; a typo in a code value would not be there.
    snomed = {value for entry in concepts["SCT"].values() for value in entry}
    for entry in STRUCTURES.values():
        for scheme, value, _ in (entry.category, entry.type):
            assert scheme in ("SCT", PRIVATE_SCHEME), entry.name
            if scheme == "SCT":
                assert value in snomed, f"{entry.name}: SCT {value} is not in DICOM PS3.16"


def test_each_structure_has_its_own_type_code():
    for name in STRUCTURES:
        code = coded_concepts(name).type
        assert structure_for_codes(code.scheme_designator, code.value) == name
    assert structure_for_codes("SCT", "80891009") is None  # heart: not one of ours


def test_infarct_is_the_enhanced_myocardium():
    assert structure("infarct") == structure("enhanced_myocardium")
    assert slicer_terminology_entry("infarct") == slicer_terminology_entry("enhanced_myocardium")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown structure 'lv_bloodpool'.*lv_blood_pool.*rv_blood_pool"):
        coded_concepts("lv_bloodpool")


def test_slicer_terminology_entry_has_slicers_seven_fields():
    assert slicer_terminology_entry("lv_blood_pool") == (
        f"{SLICER_CONTEXT_NAME}~SCT^123037004^Anatomical Structure~SCT^87878005^Left ventricle~^^"
        f"~{SLICER_ANATOMIC_CONTEXT_NAME}~^^~^^"
    )
    for name in STRUCTURES:
        fields = slicer_terminology_entry(name).split("~")
        assert len(fields) == 7
        assert fields[0] == SLICER_CONTEXT_NAME and fields[4] == SLICER_ANATOMIC_CONTEXT_NAME
        for coded in (fields[1], fields[2], fields[3], fields[5], fields[6]):
            assert coded.count("^") == 2
        codes = coded_concepts(name)
        assert fields[1].split("^") == [codes.category.scheme_designator, codes.category.value, codes.category.meaning]
        assert fields[2].split("^") == [codes.type.scheme_designator, codes.type.value, codes.type.meaning]


def test_slicer_context_resolves_every_entry():
    # Slicer accepts an entry only if its category and type are in the named context.
    context = json.loads(json.dumps(slicer_terminology_context()))
    assert context["SegmentationCategoryTypeContextName"] == SLICER_CONTEXT_NAME
    listed = {
        ((c["CodingSchemeDesignator"], c["CodeValue"]), (t["CodingSchemeDesignator"], t["CodeValue"])): t
        for c in context["SegmentationCodes"]["Category"]
        for t in c["Type"]
    }
    for name, entry in STRUCTURES.items():
        _, category, type_, *_ = slicer_terminology_entry(name).split("~")
        key = (tuple(category.split("^")[:2]), tuple(type_.split("^")[:2]))
        assert key in listed, name
        assert listed[key]["recommendedDisplayRGBValue"] == list(entry.color)
