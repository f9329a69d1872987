"""Tissue classes of the phantom and their nominal MR signal.

The renderer paints *labels* (one uint8 per sub-pixel); physics maps labels to T1W/T2W
signal through a per-case look-up table built from :data:`TISSUE_SIGNAL`. Values are on an
arbitrary 12-bit-ish scale and follow the relative order a radiologist expects:

- T1W (TR ~500 / TE ~10 ms): fat and fatty marrow bright, muscle and disc intermediate,
  CSF dark, cortex / ligament / gas / flowing blood darkest.
- T2W TSE (TR ~3000 / TE ~100 ms): CSF, disc nucleus and free fluid brightest, fat still
  fairly bright (fast spin echo), marrow intermediate, muscle dark.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    AIR = 0
    FAT = 1             # subcutaneous / retroperitoneal fat
    MUSCLE = 2
    VISCERA = 3         # abdominal organs and bowel (textured)
    LUNG = 4
    SKIN = 5
    CORTEX = 6          # cortical bone, endplates
    MARROW = 7          # fatty (yellow) marrow of bodies and posterior elements
    ANNULUS = 8
    NUCLEUS = 9
    NUCLEUS_DEGEN = 10  # desiccated nucleus (dark on T2), common at L4-S1
    CSF = 11
    CORD = 12
    EPIDURAL_FAT = 13
    LIGAMENT = 14       # ligamentum flavum, interspinous ligament
    VESSEL = 15         # aorta: flow void on spin echo
    IVC = 16            # slow venous flow: intermediate
    NERVE = 17          # cauda equina / exiting roots
    # --- lesion tissues (values of LESION / LESION_BRIGHT are set per case) ---------------
    LESION = 18         # marrow replaced by oedema or tumour
    LESION_BRIGHT = 19  # bright T2 patches (heterogeneous high T2)
    BAND = 20           # fracture line: dark on T1 and T2
    FLUID = 21          # fluid sign (and facet joint fluid): T2 very bright, T1 dark
    VACUUM = 22         # gas cleft: dark on every sequence
    MASS = 23           # soft-tissue tumour (epidural / paraspinal)
    HAEMATOMA = 24      # thin smooth paraspinal rim of a benign fracture
    SKIP = 25           # further metastases in other vertebrae
    MEDIASTINUM = 26    # heart and great vessels above the diaphragm (pulsation: textured)
    # --- benign confounders (both classes, see confounders.py) ----------------------------
    HAEMANGIOMA = 27    # vertebral haemangioma: bright on T1 and T2
    MODIC1 = 28         # Modic type 1 endplate change (oedema): dark T1, bright T2
    MODIC2 = 29         # Modic type 2 (fatty): bright T1, intermediate-bright T2
    MODIC3 = 30         # Modic type 3 (sclerosis): dark on every sequence
    FOCAL_FAT = 31      # focal fatty marrow: bright T1, fat-like T2 (dark with fat saturation)
    SCHMORL = 32        # Schmorl node: disc material herniated through an endplate


N_TISSUES = len(Tissue)

# (T1W, T2W, texture amplitude). Texture is a multiplicative smooth random field that keeps
# large regions from looking flat (trabecular marrow, bowel content, muscle fibres).
TISSUE_SIGNAL: dict[Tissue, tuple[float, float, float]] = {
    Tissue.AIR: (0.0, 0.0, 0.0),
    Tissue.FAT: (1500.0, 1050.0, 0.04),
    Tissue.MUSCLE: (480.0, 280.0, 0.07),
    Tissue.VISCERA: (620.0, 560.0, 0.18),
    Tissue.LUNG: (30.0, 25.0, 0.30),
    Tissue.SKIN: (750.0, 480.0, 0.05),
    Tissue.CORTEX: (110.0, 90.0, 0.10),
    Tissue.MARROW: (1150.0, 700.0, 0.07),
    Tissue.ANNULUS: (400.0, 260.0, 0.05),
    Tissue.NUCLEUS: (520.0, 1350.0, 0.06),
    Tissue.NUCLEUS_DEGEN: (430.0, 420.0, 0.08),
    Tissue.CSF: (230.0, 1800.0, 0.02),
    Tissue.CORD: (620.0, 650.0, 0.03),
    Tissue.EPIDURAL_FAT: (1350.0, 950.0, 0.05),
    Tissue.LIGAMENT: (200.0, 160.0, 0.10),
    Tissue.VESSEL: (90.0, 100.0, 0.20),
    Tissue.IVC: (380.0, 750.0, 0.15),
    Tissue.NERVE: (480.0, 520.0, 0.02),
    Tissue.LESION: (480.0, 800.0, 0.08),       # placeholder: overwritten per case
    Tissue.LESION_BRIGHT: (420.0, 1500.0, 0.08),  # placeholder: overwritten per case
    Tissue.BAND: (160.0, 140.0, 0.10),
    Tissue.FLUID: (300.0, 1900.0, 0.03),
    Tissue.VACUUM: (35.0, 35.0, 0.10),
    Tissue.MASS: (520.0, 900.0, 0.12),
    Tissue.HAEMATOMA: (720.0, 1100.0, 0.08),
    Tissue.SKIP: (380.0, 1150.0, 0.08),
    Tissue.MEDIASTINUM: (520.0, 330.0, 0.25),
    Tissue.HAEMANGIOMA: (1500.0, 1350.0, 0.12),  # fat and vascular lakes: above marrow on both
    Tissue.MODIC1: (520.0, 1150.0, 0.10),
    Tissue.MODIC2: (1450.0, 900.0, 0.08),
    Tissue.MODIC3: (180.0, 150.0, 0.10),
    Tissue.FOCAL_FAT: (1550.0, 1000.0, 0.05),
    Tissue.SCHMORL: (450.0, 900.0, 0.08),
}
assert set(TISSUE_SIGNAL) == set(Tissue)

# Abnormal marrow inside the fractured body: what the lesion mask counts.
LESION_MARROW = np.array([Tissue.LESION, Tissue.LESION_BRIGHT, Tissue.BAND, Tissue.FLUID,
                          Tissue.VACUUM], dtype=np.uint8)
# Tissues a soft-tissue mass may displace (never bone, never the lesion itself).
SOFT = np.array([Tissue.FAT, Tissue.MUSCLE, Tissue.VISCERA, Tissue.MEDIASTINUM, Tissue.LUNG,
                 Tissue.CSF, Tissue.CORD,
                 Tissue.EPIDURAL_FAT, Tissue.LIGAMENT, Tissue.NERVE, Tissue.VESSEL, Tissue.IVC,
                 Tissue.ANNULUS], dtype=np.uint8)
BONE = np.array([Tissue.CORTEX, Tissue.MARROW], dtype=np.uint8)


def signal_table() -> np.ndarray:
    """(N_TISSUES, 3) float32 array: T1W, T2W, texture amplitude indexed by label."""
    table = np.zeros((N_TISSUES, 3), dtype=np.float32)
    for tissue, values in TISSUE_SIGNAL.items():
        table[int(tissue)] = values
    return table


def member_lut(tissues: np.ndarray) -> np.ndarray:
    """Boolean look-up table so that ``lut[labels]`` tests membership in one gather."""
    lut = np.zeros(256, dtype=bool)
    lut[np.asarray(tissues, dtype=np.intp)] = True
    return lut
