"""Where results go in the subject hierarchy: patient -> study -> one folder per series.

A study Slicer already holds (loaded from its DICOM database) is found by its Study
Instance UID, so the results land beside the images the user already has.
"""

from __future__ import annotations

DICOM_UID = "DICOM"  # the subject hierarchy UID name Slicer's DICOM import uses


def study_item(scene, study: dict, patient_name: str = "") -> int:
    """The subject hierarchy item of the study (``study``: analysis.json "study"), created if missing."""
    hierarchy = scene.GetSubjectHierarchyNode()
    uid = study.get("study_uid") or ""
    if uid:
        existing = hierarchy.GetItemByUID(DICOM_UID, uid)
        if existing:
            return existing
    patient_id = study.get("patient_id") or ""
    patient = hierarchy.GetItemByUID(DICOM_UID, patient_id) if patient_id else 0
    if not patient:
        patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), patient_name or patient_id or "Patient")
        if patient_id:
            hierarchy.SetItemUID(patient, DICOM_UID, patient_id)
    name = " ".join(filter(None, [study.get("study_description"), _date(study.get("study_date"))])) or "Study"
    item = hierarchy.CreateStudyItem(patient, name)
    if uid:
        hierarchy.SetItemUID(item, DICOM_UID, uid)
    return item


def folder_item(scene, parent: int, name: str) -> int:
    """The child folder of ``parent`` called ``name``, created if missing."""
    hierarchy = scene.GetSubjectHierarchyNode()
    existing = hierarchy.GetItemChildWithName(parent, name)
    return existing or hierarchy.CreateFolderItem(parent, name)


def place(scene, node, parent: int) -> None:
    """Put ``node`` under ``parent`` in the subject hierarchy."""
    hierarchy = scene.GetSubjectHierarchyNode()
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def _date(value: str | None) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if value and len(value) == 8 and value.isdigit() else ""
