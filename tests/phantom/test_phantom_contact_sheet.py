"""The comparison sheet: phantoms at variation 0 and 1 beside the real volumes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spinefx.phantom import write_comparison_sheet
from spinefx.phantom.contact_sheet import BAND_TITLE, CAPTION, SHEET_TILES, TILE, TITLE


def _bands(png: Path) -> tuple[int, np.ndarray]:
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width == SHEET_TILES * TILE
        grey = np.asarray(im.convert("L"))
    rows = (grey.shape[0] - TITLE) // (TILE + CAPTION)
    return rows, grey


def test_without_real_data_two_synthetic_bands_and_a_note(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-shared"
    png = write_comparison_sheet(tmp_path / "a.png", real_dir=missing, n_scan=4)
    assert "REAL band left out" in capsys.readouterr().out
    rows, grey = _bands(png)
    assert grey.shape[0] == TITLE + 2 * BAND_TITLE + 2 * (TILE + CAPTION)
    assert rows == 2 and grey.std() > 20
    again = write_comparison_sheet(tmp_path / "b.png", real_dir=missing, n_scan=4)
    assert again.read_bytes() == png.read_bytes()  # seeded: same sheet


def test_with_real_data_a_third_band_of_real_slices(tmp_path: Path, real_spine: Path,
                                                    capsys) -> None:
    png = write_comparison_sheet(tmp_path / "c.png", real_dir=real_spine, n_scan=4)
    assert "left out" not in capsys.readouterr().out
    _, grey = _bands(png)
    synthetic_height = TITLE + 2 * BAND_TITLE + 2 * (TILE + CAPTION)
    assert grey.shape[0] == synthetic_height + BAND_TITLE + TILE + CAPTION
    real_band = grey[synthetic_height + BAND_TITLE + CAPTION:]
    # DzZ T1 | T2, vb3 and three spinesource slices: six tiles with an image in each
    tiles = [real_band[:, k * TILE:(k + 1) * TILE] for k in range(6)]
    assert all(tile.std() > 10 for tile in tiles)
    assert real_band[:, 6 * TILE:].max() == 0  # nothing beyond them
