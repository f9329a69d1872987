"""The 15 qualitative imaging features a senior reader scored in Yeh et al. 2022.

One list serves the phantom generator (which draws them), the manifest (one 0/1 column each),
evaluation (Fisher's exact test per feature) and the teaching mode (the feature key shown to
residents after they commit a call).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ImagingFeature:
    key: str                      # manifest column name
    title: str                    # what a reader calls it
    leaning: Literal["malignant", "benign"]
    explanation: str              # one or two sentences for residents


FEATURES: tuple[ImagingFeature, ...] = (
    # --- malignant-leaning -------------------------------------------------------------
    ImagingFeature("convex_posterior_border", "Convex posterior border", "malignant",
                   "The back wall of the vertebral body bulges into the canal because tumour "
                   "expands the whole body; osteoporotic fractures keep a straight or concave "
                   "wall."),
    ImagingFeature("posterior_element_signal", "Abnormal pedicle / posterior-element signal",
                   "malignant",
                   "Marrow replacement extends into the pedicles or posterior elements, seen on "
                   "para-sagittal slices; metastases spread there, osteoporotic fractures rarely "
                   "do."),
    ImagingFeature("epidural_mass", "Epidural mass", "malignant",
                   "Soft tissue behind the vertebral body inside the canal, beyond a bony "
                   "fragment."),
    ImagingFeature("encasing_epidural_mass", "Encasing epidural mass", "malignant",
                   "Epidural tissue that wraps around the thecal sac rather than bulging focally."),
    ImagingFeature("paraspinal_mass", "Focal paraspinal mass", "malignant",
                   "A focal soft-tissue mass in front of or beside the vertebra, not a thin "
                   "haematoma."),
    ImagingFeature("skip_lesions", "Other spinal metastases", "malignant",
                   "Further round marrow lesions in other vertebrae (skip lesions) suggest "
                   "metastatic disease."),
    ImagingFeature("diffuse_low_t1", "Diffuse low T1 signal (no spared marrow)", "malignant",
                   "The whole vertebral body is dark on T1: tumour has replaced all fatty marrow."),
    ImagingFeature("heterogeneous_high_t2", "Heterogeneous / high T2 signal", "malignant",
                   "Patchy or bright T2 signal through the body, typical of tumour tissue."),
    # --- benign-leaning ----------------------------------------------------------------
    ImagingFeature("low_signal_band", "Low-signal band on T1 and T2", "benign",
                   "A dark line near the endplate on both sequences: the fracture line of an "
                   "osteoporotic fracture."),
    ImagingFeature("spared_marrow", "Spared normal marrow signal", "benign",
                   "Part of the body keeps normal bright fatty-marrow signal on T1."),
    ImagingFeature("retropulsed_fragment", "Retropulsed posterior fragment", "benign",
                   "A bony corner fragment pushed backwards into the canal, typical of trauma or "
                   "osteoporosis."),
    ImagingFeature("multiple_fractures", "Multiple compression fractures", "benign",
                   "Other, older compression fractures with normal marrow signal point to "
                   "osteoporosis."),
    ImagingFeature("fluid_sign", "Fluid sign", "benign",
                   "A T2-bright, fluid-like line or pocket next to the endplate: a healing "
                   "osteoporotic fracture."),
    ImagingFeature("vacuum_cleft", "Intravertebral vacuum cleft", "benign",
                   "Gas inside the body, dark on every sequence: osteonecrosis after a benign "
                   "fracture."),
    ImagingFeature("smooth_paraspinal", "Smooth thin paraspinal soft tissue", "benign",
                   "A thin, smooth rim of soft tissue (haematoma) around the body instead of a "
                   "mass."),
)

FEATURE_KEYS: tuple[str, ...] = tuple(f.key for f in FEATURES)
FEATURES_BY_KEY: dict[str, ImagingFeature] = {f.key: f for f in FEATURES}

assert len(FEATURES) == 15 and len(set(FEATURE_KEYS)) == 15
