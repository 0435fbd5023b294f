"""Slicer's own DICOM modules still work with the pydicom the installer upgrades them to.

Slicer 5.10 ships pydicom 2.4.4; the first-use installer replaces it with the pinned 3.x
(Resources/Requirements/slicer-constraints.txt), which Slicer's DICOM module, plugins,
DICOMPatcher and web server then import. Each test replays the pydicom calls of one of
those modules, as Slicer 5.10.0 writes them (file and lines named), on a real DICOM file
written and read back with the installed pydicom, which test_installation.py checks is
the pinned one. The module's self-test runs this file inside Slicer as well, where it
checks the pydicom Slicer really has.
"""

from __future__ import annotations

import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from CMRFoundationLib.installation import pinned_version


@pytest.fixture
def dicom_file(tmp_path):
    """A small MR image file with a private block, as scanners write them."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "42", "MR"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0\1" * 4
    ds.add_new(0x00210010, "LO", "General Electric Company 01")  # a private creator
    ds.add_new(0x00211040, "LO", "private value")
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_the_installed_pydicom_is_the_pinned_one():
    assert pydicom.__version__ == pinned_version("pydicom")


def test_dicom_module_recognises_dicom_files(dicom_file, tmp_path):
    # Modules/Scripted/DICOM/DICOM.py:976-978 (canLoadFileConfidence)
    assert pydicom.misc.is_dicom(str(dicom_file))
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert not pydicom.misc.is_dicom(str(tmp_path / "notes.txt"))


def test_plugins_read_headers_and_find_private_tags(dicom_file):
    # DICOMPlugins/DICOMImageSequencePlugin.py:157, DICOMGeAbusPlugin.py:86,151, WebServerLib/DICOMRequestHandler.py:118
    ds = pydicom.dcmread(str(dicom_file), stop_before_pixels=True)
    assert "PixelData" not in ds and ds.PatientID == "42"
    # DICOMLib/DICOMPlugin.py:100-108 (findPrivateTag)
    found = None
    for tag, element in ds.items():
        if tag.group == 0x0021 and tag.element < 0x0100:
            value = element.value.decode() if type(element.value) is bytes else element.value
            if value.rstrip() == "General Electric Company 01":
                found = pydicom.tag.Tag(0x0021, (tag.element << 8) + 0x40)
    assert found == 0x00211040 and ds[found].value == "private value"


def test_plugins_generate_uids_for_export():
    # DICOMPlugins/DICOMScalarVolumePlugin.py:736-744, DICOMVolumeSequencePlugin.py:196-211, DICOMPatcher.py:285
    uids = {pydicom.uid.generate_uid(), pydicom.uid.generate_uid(None)}
    assert len(uids) == 2 and all(pydicom.uid.UID(uid).is_valid for uid in uids)


def test_web_server_builds_datasets(dicom_file):
    # WebServerLib/DICOMRequestHandler.py:33-35, 144-163
    retrieve_url = pydicom.tag.Tag(0x00080190)
    study = pydicom.dataset.Dataset()
    study[retrieve_url] = pydicom.dataelem.DataElement(retrieve_url, "UR", "http://localhost/studies/1")
    study[pydicom.tag.Tag(0x00200206)] = pydicom.dataelem.DataElement(0x00200206, "IS", 3)
    assert study[retrieve_url].value.endswith("/1") and study[0x00200206].value == 3
    assert study.to_json_dict()["00200206"]["Value"] == [3]


def test_dicom_patcher_rules(dicom_file, tmp_path):
    ds = pydicom.dcmread(str(dicom_file))
    # DICOMPatcher.py:388-390 (FixPrivateMediaStorageSOPClassUID)
    assert hasattr(ds.file_meta, "MediaStorageSOPClassUID")
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    # DICOMPatcher.py:424-471 (AddMissingSliceSpacingToMultiframe): sequences built with insert(tag, dataset)
    assert pydicom.tag.Tag(0x5200, 0x9229) not in ds
    orientation = pydicom.dataset.Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    sequence = pydicom.sequence.Sequence()
    sequence.insert(pydicom.tag.Tag(0x0020, 0x9116), orientation)
    shared = pydicom.dataset.Dataset()
    shared.PlaneOrientationSequence = sequence
    groups = pydicom.sequence.Sequence()
    groups.insert(pydicom.tag.Tag(0x5200, 0x9229), shared)
    ds.SharedFunctionalGroupsSequence = groups
    # DICOMPatcher.py:486-491 (FixExposureFiasco)
    ds.add_new(0x00181151, "IS", "2")
    ds["00188151"] = pydicom.DataElement(tag="00188151", VR="DS", value=str(float("2.5") * 1000))
    # DICOMPatcher.py:514-516 (UseCharacterSet)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.decode()
    ds.SpecificCharacterSet = "ISO_IR 192"
    # DICOMPatcher.py:665, 755-777: the transfer syntax check, then read errors and the patched file
    assert ds.file_meta.TransferSyntaxUID != pydicom.uid.JPEGBaseline8Bit
    with pytest.raises((OSError, pydicom.filereader.InvalidDicomError)):
        (tmp_path / "broken.dcm").write_bytes(b"\0" * 200)
        pydicom.dcmread(str(tmp_path / "broken.dcm"))
    pydicom.dcmwrite(str(tmp_path / "patched.dcm"), ds)
    back = pydicom.dcmread(str(tmp_path / "patched.dcm"))
    assert back.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient == [1, 0, 0, 0, 1, 0]
    assert float(back[0x00188151].value) == 2500.0 and back.SpecificCharacterSet == "ISO_IR 192"


def test_dicom_patcher_self_test_writes_its_test_file(tmp_path):
    # DICOMPatcher.py:842-854 (DICOMPatcherTest): a FileDataset written as implicit VR little endian
    file_meta = pydicom.dataset.Dataset()
    file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    file_meta.ImplementationClassUID = "1.2.3.4"
    path = str(tmp_path / "test.dcm")
    ds = pydicom.dataset.FileDataset(path, {}, file_meta=file_meta, preamble=b"\0" * 128)
    ds.PatientName, ds.PatientID = "Test^Firstname", "123456"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in pydicom 3, removed in 4
        ds.is_little_endian = True
        ds.is_implicit_VR = True
        ds.save_as(path)
    assert pydicom.dcmread(path).PatientID == "123456"
