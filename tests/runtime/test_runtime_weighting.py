"""T1 / T2 / STIR from DICOM headers: descriptions first, then inversion time, then TR/TE."""
from __future__ import annotations

import pytest

from spinefx.runtime import classify_weighting, scan_study
from tests.helpers.dicom import coded_volume, write_series

DESCRIPTIONS = [
    ("SAG T1 TSE", "T1"),
    ("t1_tse_sag", "T1"),
    ("Sag T1 post-contrast", "T1"),
    ("t2_tse_sag", "T2"),
    ("SAG T2 FSE", "T2"),
    ("T2 FS", "T2"),
    ("AX T2", "T2"),
    ("t2-frfse", "T2"),
    ("STIR", "STIR"),
    ("sag stir", "STIR"),
    ("TIRM", "STIR"),
    ("t2_tirm_sag", "STIR"),        # TIRM names the contrast even with 'T2' in it
    ("SAG IR", "STIR"),
    ("SAG T1 IR", "T1"),              # T1 inversion recovery is T1-weighted, not STIR
    ("sag_t1_flair", "T1"),          # T1-FLAIR is T1-weighted; FLAIR is not STIR
    ("T2 FLAIR", "T2"),
    ("FLAIR", "unknown"),
    ("PD FS", "unknown"),
    ("T12 level localiser", "unknown"),  # 'T12' is a vertebra, not a weighting
    ("T1 and T2 combo", "unknown"),
    ("DIXON", "unknown"),
    ("", "unknown"),
]


@pytest.mark.parametrize("description,expected", DESCRIPTIONS, ids=[d or "<empty>" for d, _ in
                                                                    DESCRIPTIONS])
def test_description(description, expected):
    assert classify_weighting(description) == expected


@pytest.mark.parametrize("kwargs,expected", [
    (dict(repetition_time=500, echo_time=10), "T1"),
    (dict(repetition_time=650, echo_time=14), "T1"),
    (dict(repetition_time=3500, echo_time=95), "T2"),
    (dict(repetition_time=1200, echo_time=40), "unknown"),   # intermediate: no guess
    (dict(repetition_time=3000, echo_time=20), "unknown"),   # PD-like
    (dict(repetition_time=500), "unknown"),                  # TE missing
    (dict(scanning_sequence="IR", inversion_time=150, repetition_time=4000, echo_time=60),
     "STIR"),
    (dict(scanning_sequence="SE\\IR", inversion_time=150), "STIR"),
    (dict(scanning_sequence="IR", inversion_time=2500, repetition_time=9000, echo_time=120),
     "T2"),                                                    # long TI = FLAIR, TR/TE decide
    (dict(scanning_sequence="SE", inversion_time=150, repetition_time=500, echo_time=10), "T1"),
    (dict(acquisition_contrast="T2"), "T2"),
    (dict(acquisition_contrast="T1", repetition_time=4000, echo_time=100), "T1"),
    (dict(acquisition_contrast="PROTON_DENSITY"), "unknown"),
    (dict(description="sag tse", repetition_time=3000, echo_time=100), "T2"),
    (dict(description="SAG T1", repetition_time=4000, echo_time=100), "T1"),  # description wins
    (dict(description="FLAIR", repetition_time=500, echo_time=10), "unknown"),
])
def test_header_fallbacks(kwargs, expected):
    assert classify_weighting(**kwargs) == expected


def test_scan_uses_tr_te_when_description_is_silent(tmp_path):
    write_series(tmp_path / "a", coded_volume(range(3)), description="sag tse", tr=520, te=12)
    write_series(tmp_path / "b", coded_volume(range(3)), description="sag tse", tr=4200, te=100,
                 series_number=2)
    write_series(tmp_path / "c", coded_volume(range(3)), description="sag", tr=4000, te=60,
                 series_number=3, extra={"ScanningSequence": ["SE", "IR"], "InversionTime": 160})
    scan = scan_study(tmp_path)
    assert [s.weighting for s in scan.series] == ["T1", "T2", "STIR"]
    assert scan.series[2].inversion_time == 160
    assert scan.series[2].scanning_sequence == "SE\\IR"
