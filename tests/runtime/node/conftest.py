"""Fixtures for the node's real-PACS tests: phantom studies, a PHI canary and a CT study, one
Orthanc per module, and ``spinefx node`` as a subprocess (the way a site runs it).

Everything is on 127.0.0.1. The node subprocess runs with one thread per library pool (the
suite shares 2 cores) and unbuffered output, so "listening" is seen the moment it is printed.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
import pytest
from pydicom.uid import CTImageStorage, generate_uid

from tests.helpers.orthanc import (
    NODE_PEER,
    NodeProcess,
    Orthanc,
    dcmtk_tool,
    dicom_files,
    orthanc_binary,
)


class Canary(NamedTuple):
    """A study whose patient is the PHI canary: values no log or name may ever show."""
    folder: Path
    patient_name: str = "CANARY^PHI^Zz"
    patient_id: str = "CANARY123"

#: the phantom cohort other tests also ask for (the session cache generates it once)
COHORT = dict(n_cases=4, n_malignant=2, seed=3)


def relabel_study(source: Path, dest: Path, tag: str, **values: Any) -> Path:
    """A copy of the study in ``source`` with ``values`` set in every file and new Study /
    Series / SOP Instance UIDs derived from the old ones and ``tag`` (deterministic, and never
    the same study as its source: the node must treat it as a study of its own)."""
    for path in dicom_files(source):
        ds = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(ds, keyword, generate_uid(entropy_srcs=[tag, str(getattr(ds, keyword))]))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        if "SOPClassUID" in values:
            ds.file_meta.MediaStorageSOPClassUID = values["SOPClassUID"]
        out = dest / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
    return dest


def analysable(case_dir: Path) -> bool:
    """T1 + T2 (the phantom also draws STIR as its second series, which predict refuses)."""
    first_t2 = dicom_files(case_dir / "t2")[0]
    return "STIR" not in str(pydicom.dcmread(first_t2, stop_before_pixels=True).SeriesDescription)


@pytest.fixture(scope="session")
def phantom_studies(phantom_cohorts, tmp_path_factory) -> list[Path]:
    """Folders of analysable SYNTHETIC phantom studies (T1 + T2 series, DICOM files only;
    the cohort's masks stay behind), read-only. Their first is the default study."""
    manifest = phantom_cohorts.manifest(**COHORT)
    root = tmp_path_factory.mktemp("node_studies")
    studies = []
    for case_dir in sorted((manifest.parent / "cases").iterdir()):
        if analysable(case_dir):
            for series in ("t1", "t2"):
                shutil.copytree(case_dir / series, root / case_dir.name / series)
            studies.append(root / case_dir.name)
    assert len(studies) >= 2, "the phantom cohort changed: fewer than 2 T1+T2 studies"
    return studies


@pytest.fixture(scope="session")
def canary_study(phantom_studies, tmp_path_factory) -> Canary:
    """The first phantom study as another patient: PatientName/PatientID are the canary."""
    canary = Canary(tmp_path_factory.mktemp("canary") / "study")
    relabel_study(phantom_studies[0], canary.folder, "canary",
                  PatientName=canary.patient_name, PatientID=canary.patient_id)
    return canary


@pytest.fixture(scope="session")
def ct_study(phantom_studies, tmp_path_factory) -> Path:
    """The first phantom study relabelled CT (Modality and SOP class): not for this model."""
    return relabel_study(phantom_studies[0], tmp_path_factory.mktemp("ct") / "study", "ct",
                         Modality="CT", SOPClassUID=CTImageStorage)


@pytest.fixture(scope="session")
def orthanc_installed() -> str:
    """Orthanc's executable; the only reason these tests skip (never in CI: .ci/run installs
    it, and a skip fails a CI run)."""
    binary = orthanc_binary()
    if binary is None:
        pytest.skip("Orthanc is not installed here (apt-get install orthanc; CI installs it)")
    if dcmtk_tool("storescu") is None:
        pytest.skip("dcmtk's storescu is not installed here (apt-get install dcmtk; CI "
                    "installs it)")
    return binary


@pytest.fixture(scope="module")
def orthanc_server(orthanc_installed, tmp_path_factory) -> Iterator[Orthanc]:
    """One Orthanc for the module (starting one costs ~4 s with its shutdown)."""
    with Orthanc(modalities=NODE_PEER, root=tmp_path_factory.mktemp("pacs")) as server:
        yield server


@pytest.fixture
def pacs(orthanc_server: Orthanc) -> Orthanc:
    """The module's Orthanc, emptied for this test (its receive counts start from zero)."""
    orthanc_server.delete_all()
    orthanc_server.reset_received()
    return orthanc_server


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """``start_node(data, dest_port, **options)``: a started node (every one is stopped at the
    end of the test); its log is ``tmp_path/node.log``, shared by restarts on the same data."""
    started: list[NodeProcess] = []

    def start(data: Path, dest_port: int, **options: Any) -> NodeProcess:
        node = NodeProcess(data, dest_port, tmp_path / "node.log", **options).start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()
