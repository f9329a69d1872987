"""The node's DICOM results (SR, SEG, SC) on a SYNTHETIC phantom study analysed once: valid per
dicom3tools' dciodvfy, read back by highdicom with the analysis' values, deterministic UIDs
and bytes, the patient's name in the files and nowhere else."""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from spinefx.runtime.localise import canonical_flips
from spinefx.runtime.provenance import DISCLAIMER

hd = pytest.importorskip("highdicom", reason="the node extra: pip install 'spinefx[node]'")

CANARY = "CANARY^PHI"
CREATED = dt.datetime(2026, 12, 1, 12, 0, 0)
NAMES = ("sr.dcm", "seg.dcm", "sc.dcm")
SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.33",   # Comprehensive SR
               "1.2.840.10008.5.1.4.1.1.66.4",    # Segmentation
               "1.2.840.10008.5.1.4.1.1.7")       # Secondary Capture


def _dciodvfy() -> str:
    exe = shutil.which("dciodvfy")
    if exe is None:
        if os.environ.get("CI"):  # .ci/run's first line installs it: missing there is a failure
            pytest.fail("dciodvfy (Debian package dicom3tools) is not installed")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools; .ci/run does)")
    return exe


def _set_header(folder: Path, **attrs) -> None:
    """Rewrite every DICOM file under ``folder`` with ``attrs`` (this test's own copy)."""
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in attrs.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """One SYNTHETIC phantom study (seed 102, T11..L5), its name set to the canary, analysed
    once (every log record and warning of the run kept), and its three results written."""
    from spinefx.phantom import write_phantom_study
    from spinefx.runtime.dicom_outputs import dicom_results, save_dataset
    from spinefx.runtime.inference import Predictor
    from spinefx.runtime.study import Study
    from spinefx.runtime.study_analysis import analyse_spine

    base = tmp_path_factory.mktemp("dicom_outputs")
    root = base / "study"
    write_phantom_study(root, seed=102, label="benign", t2_variant="T2", case_id="p102")
    _set_header(root, PatientName=CANARY)
    records, root_logger = _Records(), logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(records)
    root_logger.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            study = Study.open(root)
            pair = study.choose_pair(None, None, "strict")
            predictor = Predictor(None)
            spine = analyse_spine(predictor, study, pair)
            datasets = dicom_results(spine, study, predictor.spec, spine.primary.overlay(),
                                     seed="seed-1", created=CREATED)
            files = [save_dataset(ds, base / "out" / name) for ds, name in zip(datasets, NAMES)]
    finally:
        root_logger.removeHandler(records)
        root_logger.setLevel(old_level)
    seen = records.texts + [str(w.message) for w in caught]
    return {"root": root, "study": study, "pair": pair, "predictor": predictor,
            "spine": spine, "datasets": datasets, "files": files, "seen": seen}


def _t1_uids(analysed) -> list[str]:
    t1 = analysed["study"].volume(analysed["pair"].t1)
    return [str(pydicom.dcmread(f.split("#")[0], stop_before_pixels=True).SOPInstanceUID)
            for f in t1.slice_sources]


def _dciodvfy_errors(exe: str, path: Path) -> tuple[list[str], str]:
    proc = subprocess.run([exe, str(path)], capture_output=True, timeout=120)
    report = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return [line for line in report.splitlines() if line.startswith("Error")], report


@pytest.mark.parametrize("index", [0, 1, 2], ids=["sr", "seg", "sc"])
def test_each_result_is_valid_dicom_in_the_source_study(analysed, index) -> None:
    exe = _dciodvfy()
    errors, report = _dciodvfy_errors(exe, analysed["files"][index])
    assert not errors, report
    out = pydicom.dcmread(analysed["files"][index])
    source = pydicom.dcmread(analysed["spine"].localisation.volume.slice_sources[0],
                             stop_before_pixels=True)
    assert out.StudyInstanceUID == source.StudyInstanceUID
    assert str(out.PatientName) == CANARY and out.PatientID == source.PatientID
    assert out.SOPClassUID == SOP_CLASSES[index]
    assert out.SeriesInstanceUID != source.SeriesInstanceUID


def test_sr_reads_back_with_the_analysis_values(analysed) -> None:
    from pydicom.sr.codedict import codes

    spine = analysed["spine"]
    sr = hd.sr.srread(analysed["files"][0])
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    groups = sr.content.get_image_measurement_groups()
    entries = spine.localisation.document["vertebrae"]
    assert [g.tracking_identifier for g in groups] == [e["level"] for e in entries]
    uids = _t1_uids(analysed)
    threshold = analysed["predictor"].spec.threshold
    for group, entry, result in zip(groups, entries, spine.results):
        measured = {m.name.meaning: m.value for m in group.get_measurements()}
        evaluated = {q.name.meaning: q.value for q in group.get_qualitative_evaluations()}
        grade = evaluated["Genant semi-quantitative fracture grade"]
        assert grade.value == ("GENANT-NG" if entry["grade"] is None
                               else f"GENANT{entry['grade']}")
        assert grade.scheme_designator == "99SPINEFX"
        if entry["height_loss"] is None:
            assert "Vertebral body height loss" not in measured
        else:
            assert measured["Vertebral body height loss"] == pytest.approx(
                100 * entry["height_loss"], abs=1e-9)
        slice_index = int(entry.get("height_slice", entry["slice"]))
        assert group.source_images[0].referenced_sop_instance_uid == uids[slice_index]
        site = "Sacrum" if entry["level"].startswith("S") else entry["level"]  # SCT's code
        assert group.finding_sites[0].value.meaning.startswith(site)
        if result is None:
            assert "Fracture class at the model threshold" not in evaluated
            continue
        p = result.prediction.probability
        key = "Probability of a malignant (pathological) compression fracture"
        assert measured[key] == pytest.approx(p, abs=1e-12)
        assert measured["Model decision threshold"] == pytest.approx(threshold, abs=1e-12)
        label = evaluated["Fracture class at the model threshold"]
        assert label == (codes.SCT.Malignant if p >= threshold else codes.SCT.Benign)
    assert sum(r is not None for r in spine.results) >= 5   # the probabilities were checked


def test_sr_names_the_model_and_says_research_and_synthetic(analysed) -> None:
    from pydicom.sr.codedict import codes

    sr = hd.sr.srread(analysed["files"][0])
    texts = [item.TextValue for item in hd.sr.utils.find_content_items(
        sr, value_type=hd.sr.ValueTypeValues.TEXT, recursive=True)]
    predictor = analysed["predictor"]
    assert DISCLAIMER in texts and "not for diagnosis" in DISCLAIMER
    assert predictor.spec.synthetic and any("SYNTHETIC" in t for t in texts)
    names = [item.TextValue for item in hd.sr.utils.find_content_items(
        sr, name=codes.DCM.AlgorithmName, recursive=True)]
    assert predictor.spec.name in names
    assert f"sha256={predictor.sha256}" in texts
    assert "SYNTHETIC" in sr.SeriesDescription


def test_seg_has_one_segment_per_level_and_the_localiser_masks(analysed) -> None:
    spine = analysed["spine"]
    seg = hd.seg.segread(analysed["files"][1])
    vl = spine.localisation.vertebrae
    assert seg.number_of_segments == len(vl.vertebrae) >= 5
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [v.level for v in vl.vertebrae]
    t1 = analysed["study"].volume(analysed["pair"].t1)
    assert seg.FrameOfReferenceUID == t1.metadata["frame_of_reference_uid"]
    uids = _t1_uids(analysed)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               ignore_spatial_locations=True)
    flips = canonical_flips(spine.localisation.volume)
    for i in range(len(vl.vertebrae)):
        expected = vl.mask(i)   # the localiser's, on its canonical grid: back to the series'
        if flips[0]:
            expected = expected[:, ::-1, :]
        if flips[1]:
            expected = expected[:, :, ::-1]
        assert np.array_equal(pixels[..., i].astype(bool), expected), vl.vertebrae[i].level
    referenced = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence
                  for r in s.ReferencedInstanceSequence}
    assert referenced <= set(uids) and referenced


def test_same_seed_same_uids_and_bytes_other_seed_other_uids(analysed) -> None:
    from spinefx.runtime.dicom_outputs import dicom_results, encode_dataset

    spine, study = analysed["spine"], analysed["study"]
    spec, overlay = analysed["predictor"].spec, spine.primary.overlay()
    again = dicom_results(spine, study, spec, overlay, seed="seed-1", created=CREATED)
    first = analysed["datasets"]
    assert [encode_dataset(ds) for ds in again] == [f.read_bytes() for f in analysed["files"]]
    later = dicom_results(spine, study, spec, overlay, seed="seed-1")   # another clock time
    assert [(d.SOPInstanceUID, d.SeriesInstanceUID) for d in later] == \
        [(d.SOPInstanceUID, d.SeriesInstanceUID) for d in first]
    other = dicom_results(spine, study, spec, overlay, seed="seed-2", created=CREATED)
    uids = {str(d.SOPInstanceUID) for d in first} | {str(d.SeriesInstanceUID) for d in first}
    assert len(uids) == 6   # three series, three instances, none shared
    assert not uids & ({str(d.SOPInstanceUID) for d in other}
                       | {str(d.SeriesInstanceUID) for d in other})


def test_result_seed_depends_on_the_result(analysed) -> None:
    import copy

    from spinefx.runtime.dicom_outputs import result_seed

    spine, study = analysed["spine"], analysed["study"]
    seed = result_seed(spine, study)
    assert seed == result_seed(spine, study) and len(seed) == 64
    changed = copy.copy(spine)
    changed.classified = "graded >= 1"
    assert result_seed(changed, study) != seed


def test_the_name_is_in_the_sr_and_never_in_a_log_or_warning(analysed, tmp_path, caplog,
                                                             capfd) -> None:
    from spinefx.runtime.dicom_outputs import dicom_results, save_dataset
    from spinefx.runtime.study import Study

    assert CANARY.encode() in analysed["files"][0].read_bytes()
    assert not [text for text in analysed["seen"] if "CANARY" in text]
    # a one-component name makes highdicom warn and log *with the name*: it must not get out
    solo = "CANARYSOLO"
    with warnings.catch_warnings(record=True) as provoked:
        warnings.simplefilter("always")
        hd.valuerep.check_person_name(solo)
    assert any(solo in str(w.message) for w in provoked)   # the input does provoke it
    copy_root = tmp_path / "study"
    shutil.copytree(analysed["root"], copy_root)
    _set_header(copy_root, PatientName=solo)
    study = Study.open(copy_root)
    capfd.readouterr()
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        spine, spec = analysed["spine"], analysed["predictor"].spec
        datasets = dicom_results(spine, study, spec, spine.primary.overlay(), seed="s")
        path = save_dataset(datasets[0], tmp_path / "sr.dcm")
    captured = capfd.readouterr()
    seen = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    seen += [captured.out, captured.err, caplog.text]
    assert not [text for text in seen if solo in text], seen
    # nothing pydicom or highdicom (or any of their module loggers) says gets out meanwhile
    assert not [r.name for r in caplog.records if r.name.split(".")[0] in ("pydicom",
                                                                           "highdicom")]
    assert str(pydicom.dcmread(path).PatientName) == solo
    assert not [name for name in list(logging.Logger.manager.loggerDict)
                if name.split(".")[0] in ("pydicom", "highdicom")
                and logging.getLogger(name).filters]   # every filter removed again


def test_a_utf8_name_survives_in_all_three(analysed, tmp_path) -> None:
    from spinefx.runtime.dicom_outputs import dicom_results, save_dataset
    from spinefx.runtime.study import Study

    exe = _dciodvfy()
    name = "Müller^Jörg"
    copy_root = tmp_path / "study"
    shutil.copytree(analysed["root"], copy_root)
    _set_header(copy_root, SpecificCharacterSet="ISO_IR 192", PatientName=name)
    study = Study.open(copy_root)
    spine, spec = analysed["spine"], analysed["predictor"].spec
    datasets = dicom_results(spine, study, spec, spine.primary.overlay(), seed="utf8")
    for ds, file_name in zip(datasets, NAMES):
        path = save_dataset(ds, tmp_path / file_name)
        errors, report = _dciodvfy_errors(exe, path)
        assert not errors, report
        back = pydicom.dcmread(path)
        assert back.SpecificCharacterSet == "ISO_IR 192" and str(back.PatientName) == name
        assert name.encode("utf-8") in path.read_bytes()


def test_seg_labels_are_flipped_back_onto_a_series_stored_the_other_way(analysed) -> None:
    """The localiser's labels are on its canonical grid (rows superior -> inferior): a series
    whose rows run inferior -> superior gets them flipped back, as vertebrae_mask.nii.gz."""
    import dataclasses
    from types import SimpleNamespace

    from spinefx.runtime.dicom_seg import segment_label_map

    localisation = analysed["spine"].localisation
    as_stored = segment_label_map(analysed["spine"])
    upside_down = dataclasses.replace(localisation.volume,
                                      column_direction=-localisation.volume.column_direction)
    assert canonical_flips(upside_down)[0] != canonical_flips(localisation.volume)[0]
    other = SimpleNamespace(localisation=SimpleNamespace(vertebrae=localisation.vertebrae,
                                                         volume=upside_down))
    assert np.array_equal(segment_label_map(other), as_stored[:, ::-1, :])
    assert set(np.unique(as_stored)) == set(range(len(localisation.vertebrae.vertebrae) + 1))


def test_derived_uids_are_valid_deterministic_and_keep_parts_apart() -> None:
    from pydicom.uid import UID

    from spinefx.runtime.dicom_uids import UID_PREFIX, derived_uid

    uid = derived_uid("1.2.3", "seed", "sr")
    assert uid == derived_uid("1.2.3", "seed", "sr") and UID(uid).is_valid
    assert uid.startswith(UID_PREFIX) and len(uid) <= 64
    assert derived_uid("ab", "c") != derived_uid("a", "bc") != derived_uid("abc")
    assert derived_uid("x", prefix="1.2.40.").startswith("1.2.40.")
    with pytest.raises(ValueError):
        derived_uid()


def _as_enhanced(folder: Path, order: list[int]) -> Path:
    """Replace the single-frame files in ``folder`` by one Enhanced MR image whose frame f
    holds slice ``order[f]`` (slices in position order), in the same study."""
    from tests.helpers.dicom import write_enhanced

    files = sorted(folder.glob("*.dcm"))
    slices = sorted((pydicom.dcmread(f) for f in files),
                    key=lambda d: float(np.dot(d.ImagePositionPatient, np.cross(
                        d.ImageOrientationPatient[:3], d.ImageOrientationPatient[3:]))))
    first = slices[0]
    path = write_enhanced(folder / "enhanced.dcm", np.stack([slices[i].pixel_array
                                                             for i in order]),
                          np.array([slices[i].ImagePositionPatient for i in order], float),
                          iop=[float(v) for v in first.ImageOrientationPatient],
                          spacing=[float(v) for v in first.PixelSpacing], slope=1.0,
                          intercept=0.0, description=first.SeriesDescription,
                          thickness=float(first.SliceThickness), acquisition_contrast="T1")
    for f in files:
        f.unlink()
    enhanced = pydicom.dcmread(path)
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID",
                    "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "RepetitionTime", "EchoTime"):
        if keyword in first:
            setattr(enhanced, keyword, first.get(keyword))
    enhanced.save_as(path)
    return path


def test_a_multiframe_t1_gets_its_frames_in_the_seg_and_the_sr(analysed, tmp_path) -> None:
    from spinefx.runtime.dicom_outputs import dicom_results, save_dataset
    from spinefx.runtime.dicom_seg import segment_label_map
    from spinefx.runtime.study import Study
    from spinefx.runtime.study_analysis import analyse_spine

    exe = _dciodvfy()
    root = tmp_path / "study"
    shutil.copytree(analysed["root"], root)
    n = analysed["spine"].localisation.volume.n_slices
    order = [3, 0, 5, 1, 4, 2, *range(6, n)]        # frames not in position order
    enhanced = _as_enhanced(root / "t1", order)
    study = Study.open(root)
    pair = study.choose_pair(None, None, "strict")
    predictor = analysed["predictor"]
    spine = analyse_spine(predictor, study, pair)
    datasets = dicom_results(spine, study, predictor.spec, spine.primary.overlay(), seed="mf",
                             parametric_map=True)
    paths = [save_dataset(ds, tmp_path / name)
             for ds, name in zip(datasets, (*NAMES, "pm.dcm"), strict=True)]
    for path in paths:
        errors, report = _dciodvfy_errors(exe, path)
        assert not errors, report
    uid = str(pydicom.dcmread(enhanced, stop_before_pixels=True).SOPInstanceUID)
    seg = hd.seg.segread(paths[1])
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=uid, source_frame_numbers=list(range(1, n + 1)),
        combine_segments=True, ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True)
    assert np.array_equal(pixels, segment_label_map(spine)[order])
    groups = hd.sr.srread(paths[0]).content.get_image_measurement_groups()
    for group, entry in zip(groups, spine.localisation.document["vertebrae"]):
        image = group.source_images[0]
        assert image.referenced_sop_instance_uid == uid
        slice_index = int(entry.get("height_slice", entry["slice"]))
        assert list(image.referenced_frame_numbers) == [order.index(slice_index) + 1]
    pm = pydicom.dcmread(paths[3])   # the map's frames reference the one enhanced image
    referenced = {str(r.ReferencedSOPInstanceUID) for s in pm.ReferencedSeriesSequence
                  for r in s.ReferencedInstanceSequence}
    assert referenced == {uid}


def test_without_highdicom_or_dicom_input_a_clear_error(analysed, monkeypatch) -> None:
    import dataclasses
    import sys
    from types import SimpleNamespace

    from spinefx.runtime.dicom_sr import source_headers, structured_report
    from spinefx.runtime.errors import SpineFXError

    spine, study = analysed["spine"], analysed["study"]
    t1 = dataclasses.replace(study.volume(analysed["pair"].t1), metadata={})  # not DICOM
    with pytest.raises(SpineFXError, match="need DICOM input"):
        source_headers(spine, SimpleNamespace(volume=lambda key: t1))
    monkeypatch.setitem(sys.modules, "highdicom", None)   # import highdicom -> ImportError
    with pytest.raises(SpineFXError, match=r"pip install 'spinefx\[node\]'"):
        structured_report(spine, study, analysed["predictor"].spec, seed="s")


def test_a_not_analysed_report_is_valid_says_why_and_joins_the_study(analysed, tmp_path) -> None:
    import highdicom as hd

    from spinefx.runtime.dicom_outputs import save_dataset
    from spinefx.runtime.dicom_sr import skipped_report

    source = sorted(Path(analysed["root"]).rglob("*.dcm"))[0]
    reason = "no sagittal T2 series in the study"
    sr = skipped_report(source, reason, analysed["predictor"].spec, seed="seed-1",
                        created=CREATED)
    path = save_dataset(sr, tmp_path / "skipped.dcm")
    errors, report = _dciodvfy_errors(_dciodvfy(), path)
    assert not errors, report
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert sr.StudyInstanceUID == src.StudyInstanceUID and str(sr.PatientName) == CANARY
    texts = [item.TextValue for item in hd.sr.srread(path).ContentSequence
             if item.ValueType == "TEXT"]
    assert f"Not analysed by spinefx: {reason}" in texts
    assert any("not for diagnosis" in t.lower() for t in texts)
    # its own UIDs: never those of the findings SR of the same seed
    assert sr.SOPInstanceUID != analysed["datasets"][0].SOPInstanceUID
    assert sr.SOPInstanceUID == skipped_report(source, reason, analysed["predictor"].spec,
                                               seed="seed-1", created=CREATED).SOPInstanceUID


@pytest.fixture(scope="module")
def parametric(analysed, tmp_path_factory):
    """The Parametric Map of the analysis' maps, with the other three, written once."""
    from spinefx.runtime.dicom_outputs import dicom_results, save_dataset

    spine, study = analysed["spine"], analysed["study"]
    datasets = dicom_results(spine, study, analysed["predictor"].spec, spine.primary.overlay(),
                             seed="seed-1", created=CREATED, parametric_map=True)
    path = save_dataset(datasets[3], tmp_path_factory.mktemp("pm") / "pm.dcm")
    return {"datasets": datasets, "path": path}


def test_parametric_map_is_valid_and_joins_the_study_beside_the_same_three(analysed,
                                                                           parametric):
    exe = _dciodvfy()
    errors, report = _dciodvfy_errors(exe, parametric["path"])
    assert not errors, report
    from spinefx.runtime.dicom_outputs import encode_dataset

    # asking for the map changes none of the other three results
    assert [encode_dataset(ds) for ds in parametric["datasets"][:3]] == \
        [f.read_bytes() for f in analysed["files"]]
    pm = pydicom.dcmread(parametric["path"])
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"      # Parametric Map Storage
    assert pm.StudyInstanceUID == analysed["datasets"][0].StudyInstanceUID
    assert str(pm.PatientName) == CANARY
    t1 = analysed["study"].volume(analysed["pair"].t1)
    assert pm.FrameOfReferenceUID == t1.metadata["frame_of_reference_uid"]
    others = {str(d.SeriesInstanceUID) for d in analysed["datasets"]}
    assert str(pm.SeriesInstanceUID) not in others | {t1.series_uid}
    assert pm.ContentQualification == "RESEARCH" and "not for diagnosis" in pm.ImageComments


def test_parametric_map_holds_each_classified_vertebras_map_on_its_t1_slice(analysed,
                                                                             parametric):
    from spinefx.runtime.dicom_pm import PM_SCALE, map_frames

    spine = analysed["spine"]
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(parametric["path"]))
    frames = map_frames(spine)
    classified = [r for r in spine.results if r is not None]
    assert len(classified) >= 5 and set(frames) == {r.roi.slice_index for r in classified}
    stored = pm.pixel_array.astype(np.float64)
    if stored.ndim == 2:
        stored = stored[None]
    assert stored.shape == (len(frames), *spine.localisation.volume.data.shape[1:])
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    real = stored * float(mapping.RealWorldValueSlope) + float(mapping.RealWorldValueIntercept)
    assert float(mapping.RealWorldValueSlope) == pytest.approx(1.0 / PM_SCALE)
    t1 = analysed["study"].volume(analysed["pair"].t1)
    at = {}                     # frame -> T1 slice, by the frame's own plane position
    for f, item in enumerate(pm.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        [index] = [i for i in frames if np.allclose(position, t1.positions[i], atol=1e-3)]
        at[index] = f
    assert sorted(at) == list(frames)
    for index, expected in frames.items():
        assert np.abs(real[at[index]] - expected).max() <= 0.5 / PM_SCALE + 1e-9, index
    for result in classified:   # each map's peak (1, or 0 for an all-benign map) kept
        frame = real[at[result.roi.slice_index]]
        x0, y0, x1, y1 = (int(v) for v in result.prediction.roi)
        own = float(result.prediction.cam_slice.max())
        assert frame[max(y0, 0):y1, max(x0, 0):x1].max() >= own - 1e-3
    assert real.max() == pytest.approx(1.0, abs=1e-3)
    union = np.zeros(real.shape, bool)
    for result in classified:
        x0, y0, x1, y1 = (int(v) for v in result.prediction.roi)
        union[at[result.roi.slice_index], max(y0, 0):y1, max(x0, 0):x1] = True
    assert not real[~union].any()                               # nothing outside the ROIs
    orientation = pm.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    assert np.allclose([float(v) for v in orientation.ImageOrientationPatient],
                       [*t1.row_direction, *t1.column_direction], atol=1e-4)


def test_parametric_map_uids_follow_the_seed_and_need_a_classified_vertebra(analysed,
                                                                            parametric):
    import copy

    from spinefx.runtime.dicom_pm import parametric_map
    from spinefx.runtime.errors import SpineFXError

    spine, study = analysed["spine"], analysed["study"]
    again = parametric_map(spine, study, seed="seed-1", created=CREATED)
    from spinefx.runtime.dicom_outputs import encode_dataset

    assert encode_dataset(again) == parametric["path"].read_bytes()
    other = parametric_map(spine, study, seed="seed-2", created=CREATED)
    assert other.SOPInstanceUID != again.SOPInstanceUID
    assert other.SeriesInstanceUID != again.SeriesInstanceUID
    none = copy.copy(spine)
    none.results = [None] * len(spine.results)
    with pytest.raises(SpineFXError, match="no vertebra was classified"):
        parametric_map(none, study, seed="s")
