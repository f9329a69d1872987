"""Cohorts on disk (manifest, masks, cohort.json), the in-memory stream of the same cases, the
DICOM round trip through the runtime, the contact sheet, the CLI's checks, the README's table."""
from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from spinefx.phantom import (
    MANIFEST_COLUMNS,
    PHANTOM_VERSION,
    CohortExistsError,
    generate_cohort,
    iter_cases,
    probability_table_markdown,
    write_contact_sheet,
    write_phantom_study,
)
from spinefx.phantom.cohort import MASK_NAMES
from spinefx.runtime import load_series
from spinefx.runtime.features import FEATURE_KEYS

N, N_MALIGNANT = 7, 3


def _rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _pixels(folder: Path) -> dict[str, bytes]:
    """PixelData of every DICOM file below ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): pydicom.dcmread(p).PixelData
            for p in sorted(folder.rglob("*.dcm"))}


@pytest.fixture(scope="module")
def cohort(phantom_cohorts) -> Path:
    return phantom_cohorts.manifest(n_cases=N, n_malignant=N_MALIGNANT, seed=3)


def test_manifest_columns_labels_and_files(cohort: Path) -> None:
    with open(cohort, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == MANIFEST_COLUMNS
    assert header[11:26] == list(FEATURE_KEYS) and header[-1] == "patient_id"
    rows = _rows(cohort)
    assert len(rows) == N
    assert sum(r["label"] == "malignant" for r in rows) == N_MALIGNANT
    assert {r["label"] for r in rows} == {"benign", "malignant"}
    assert len({r["patient_id"] for r in rows}) == N  # one case per patient by default
    base = cohort.parent
    for r in rows:
        assert all(r[k] in ("0", "1") for k in FEATURE_KEYS)
        assert (base / r["t1"]).is_dir() and (base / r["t2"]).is_dir()
        with np.load(base / r["mask"], allow_pickle=False) as masks:
            lesion, vertebra = masks["lesion"], masks["vertebra"]
        assert lesion.dtype == np.uint8 and lesion.shape == vertebra.shape
        n_files = len(list((base / r["t1"]).glob("*.dcm")))
        assert lesion.shape[0] == n_files
        i = int(r["slice"])
        x0, y0, x1, y1 = (int(r[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
        assert lesion[i].sum() > 0 and lesion[i][y0:y1, x0:x1].sum() == lesion[i].sum()
    info = json.loads((base / "cohort.json").read_text())
    assert info["synthetic"] is True and info["seed"] == 3 and info["n_malignant"] == N_MALIGNANT
    assert set(info["probabilities"]) == set(FEATURE_KEYS)
    assert info["generator_version"] == PHANTOM_VERSION == 2
    assert info["variation"] == 1.0 and info["cases_per_patient"] == 1
    assert info["n_patients"] == N and info["label_unit"] == "patient"
    assert info["tables"]["features"] == probability_table_markdown()
    assert info["tables"]["confounders"].startswith("| confounder |")
    assert [p["case_id"] for p in info["plan"]] == [r["case_id"] for r in rows]


def test_masks_hold_every_level_on_both_grids(cohort: Path) -> None:
    rows = _rows(cohort)
    own_grid = 0
    for r in rows:
        t1 = load_series(cohort.parent / r["t1"]).data
        t2 = load_series(cohort.parent / r["t2"]).data
        with np.load(cohort.parent / r["mask"], allow_pickle=False) as npz:
            masks = {k: npz[k] for k in npz.files}
        names = [str(n) for n in masks["level_names"]]
        assert masks["level_names"].dtype.kind == "U" and r["level"] in names
        grids = [("", t1.shape)] + ([("t2_", t2.shape)] if t2.shape != t1.shape else [])
        own_grid += len(grids) == 2
        expected = {f"{p}{m}" for p, _ in grids for m in MASK_NAMES} | {"level_names"}
        assert set(masks) == expected
        for prefix, shape in grids:
            bodies, vertebra = masks[f"{prefix}bodies"], masks[f"{prefix}vertebra"]
            discs = masks[f"{prefix}discs"]
            assert all(masks[f"{prefix}{m}"].shape == shape for m in MASK_NAMES)
            assert all(masks[f"{prefix}{m}"].dtype == np.uint8 for m in MASK_NAMES)
            assert int(bodies.max()) <= len(names) and int(discs.max()) <= len(names)
            # the fractured body carries its level's label in the bodies map
            level_value = names.index(r["level"]) + 1
            assert vertebra.any() and np.mean(bodies[vertebra > 0] == level_value) > 0.9
            assert len(np.unique(bodies)) > 2, "bodies must label every level, not only one"
            assert discs.any() and not np.any((discs > 0) & (bodies > 0))
            assert not np.any(masks[f"{prefix}lesion"] & ~vertebra)
    assert own_grid >= 1, "no case of this cohort has T2 on its own grid: pick another seed"


def test_the_stream_yields_exactly_the_disk_cohort(cohort: Path) -> None:
    rows = _rows(cohort)
    streamed = list(iter_cases(3, N, N_MALIGNANT, workers=1, progress=False))
    assert len(streamed) == len(rows)
    for r, (row, case) in zip(rows, streamed):
        assert set(row) == set(MANIFEST_COLUMNS) - {"t1", "t2", "mask"}
        assert {k: str(v) for k, v in row.items()} == {k: r[k] for k in row}
        assert np.array_equal(load_series(cohort.parent / r["t1"]).data, case.t1)
        assert np.array_equal(load_series(cohort.parent / r["t2"]).data, case.t2)
        with np.load(cohort.parent / r["mask"], allow_pickle=False) as npz:
            assert np.array_equal(npz["lesion"], case.masks("t1")["lesion"])
            assert np.array_equal(npz["bodies"], case.masks("t1")["bodies"])


def test_the_stream_does_not_depend_on_workers() -> None:
    one = list(iter_cases(8, 4, 2, workers=1, progress=False, n_slices=5))
    two = iter_cases(8, 4, 2, workers=2, progress=False, n_slices=5)
    for (row1, case1), (row2, case2) in zip(one, two, strict=True):
        assert row1 == row2 and np.array_equal(case1.t2, case2.t2)
    first_only = iter_cases(8, 4, 2, workers=2, progress=False, n_slices=5)
    row, _ = next(first_only)  # stopping early shuts the pool down cleanly
    first_only.close()
    assert row == one[0][0]


def test_same_seed_gives_identical_cohort_other_seed_does_not(cohort: Path, tmp_path: Path) -> None:
    again = generate_cohort(tmp_path / "again", n_cases=N, n_malignant=N_MALIGNANT, seed=3,
                            progress=False, workers=2)  # parallel or not: same output
    assert again.read_bytes() == cohort.read_bytes()
    assert _pixels(again.parent) == _pixels(cohort.parent)
    for r in _rows(cohort):
        assert (again.parent / r["mask"]).read_bytes() == (cohort.parent / r["mask"]).read_bytes()
    other = generate_cohort(tmp_path / "other", n_cases=N, n_malignant=N_MALIGNANT, seed=4,
                            progress=False)
    assert other.read_bytes() != cohort.read_bytes()


def test_dicom_round_trip_through_the_runtime(tmp_path: Path) -> None:
    t1_dir, t2_dir, case = write_phantom_study(tmp_path / "s", seed=17, label="malignant",
                                               t2_scale=0.9)
    t1, t2 = load_series(t1_dir), load_series(t2_dir)
    assert np.array_equal(t1.data, case.t1)  # loaded order == in-memory order == manifest order
    assert np.array_equal(t2.data, case.t2)  # T2 on its own grid
    assert t2.data.shape[1:] != t1.data.shape[1:]
    assert np.allclose(t1.positions[:, 0], case.slice_x)
    assert np.allclose(t1.positions, t2.positions, atol=1.0)  # same slices, same FOV corner
    assert t1.weighting == "T1" and t2.weighting == "T2"

    ds = pydicom.dcmread(next(t1_dir.glob("*.dcm")))
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    for tag in ("ImagePositionPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
                "SliceLocation", "InstanceNumber", "FrameOfReferenceUID", "StudyInstanceUID",
                "SeriesInstanceUID", "RepetitionTime", "EchoTime", "WindowCenter", "WindowWidth"):
        assert tag in ds, tag
    assert ds.Modality == "MR" and ds.ScanningSequence == "SE" and ds.MRAcquisitionType == "2D"
    assert ds.BitsAllocated == 16 and ds.BitsStored == 12 and ds.PixelRepresentation == 0
    assert str(ds.PatientName).startswith("SYNTHETIC^PHANTOM_") and ds.PatientID.startswith("SYN-")
    assert ds.PatientBirthDate == ""
    ds2 = pydicom.dcmread(next(t2_dir.glob("*.dcm")))
    assert ds2.FrameOfReferenceUID == ds.FrameOfReferenceUID
    assert ds2.StudyInstanceUID == ds.StudyInstanceUID
    assert ds2.SeriesInstanceUID != ds.SeriesInstanceUID
    assert float(ds.RepetitionTime) < 1000 < float(ds2.RepetitionTime)

    # File names carry no order: renamed at random, the volume loads the same.
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    files = sorted(t1_dir.glob("*.dcm"))
    names = [f"x{n:03d}" for n in random.Random(0).sample(range(1000), len(files))]
    for src, name in zip(files, names):
        shutil.copy(src, shuffled / name)
    assert np.array_equal(load_series(shuffled).data, case.t1)


def test_refuses_to_write_into_a_folder_that_is_not_a_cohort(tmp_path: Path) -> None:
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(CohortExistsError, match="mine"):
        generate_cohort(precious, n_cases=2, n_malignant=1, progress=False)
    assert isinstance(CohortExistsError("x"), ValueError)
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CohortExistsError):
        generate_cohort(a_file, n_cases=2, n_malignant=1, progress=False)
    with pytest.raises(ValueError):
        generate_cohort(tmp_path / "bad", n_cases=2, n_malignant=3, progress=False)


def test_a_previous_cohort_is_replaced_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "c"
    generate_cohort(out, n_cases=3, n_malignant=1, seed=1, progress=False)
    (out / "README.txt").write_text("user file")  # not ours: must survive
    manifest = generate_cohort(out, n_cases=2, n_malignant=1, seed=2, progress=False)
    assert len(_rows(manifest)) == 2
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["case_0001", "case_0002"]
    assert (out / "README.txt").read_text() == "user file"


def test_contact_sheet_is_a_png_of_sensible_size(cohort: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = write_contact_sheet(cohort, tmp_path / "sheet.png", max_cases=5)
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.format == "PNG" and 800 <= im.width <= 4000 and 250 <= im.height <= 4000
        grey = np.asarray(im.convert("L"))
    assert grey.std() > 20  # not blank


@pytest.mark.parametrize("option, value, message", [
    ("--variation", "1.5", "--variation"), ("--variation", "nan", "--variation"),
    ("--cases-per-patient", "0", "--cases-per-patient"),
    ("--cases-per-patient", "7", "--cases-per-patient"), ("--difficulty", "-1", "--difficulty"),
    ("--cases", "0", "--cases")])
def test_cli_refuses_bad_values_in_one_line(tmp_path: Path, capsys, option: str, value: str,
                                            message: str) -> None:
    from spinefx.cli import main

    out = tmp_path / "c"
    assert main(["phantom", "--out", str(out), "--cases", "4", "--malignant", "2",
                 option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_cli_limit_is_the_number_of_fracture_levels() -> None:
    from spinefx.cli.phantom import MAX_CASES_PER_PATIENT
    from spinefx.phantom.spine import LESION_LEVELS

    assert MAX_CASES_PER_PATIENT == len(LESION_LEVELS)


def test_cli_writes_a_cohort_with_patients_and_a_contact_sheet(tmp_path: Path, capsys) -> None:
    from spinefx.cli import main

    out = tmp_path / "c"
    assert main(["phantom", "--out", str(out), "--cases", "3", "--malignant", "1", "--seed", "2",
                 "--cases-per-patient", "2", "--variation", "0.5", "--contact-sheet",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "2 cases per patient" in printed
    info = json.loads((out / "cohort.json").read_text())
    assert info["variation"] == 0.5 and info["cases_per_patient"] == 2
    assert len({r["patient_id"] for r in _rows(out / "manifest.csv")}) == 2
    assert (out / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"


def _readme_phantom_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    return text.split("## The synthetic phantom cohort", 1)[1].split("\n## ", 1)[0]


def test_readme_tables_are_the_generated_ones() -> None:
    """The README shows every class-dependent draw (and the class-independent confounders)
    exactly as the code has them."""
    from spinefx.phantom.confounders import confounder_table_markdown

    section = _readme_phantom_section()
    for table in (probability_table_markdown(), confounder_table_markdown()):
        assert table in section
        header = table.splitlines()[0]
        assert section.count(header) == 1  # no stale copy beside it
