"""The training data path with its default (one input per case, the manifest's ROI): the stack
is the runtime's own input, byte for byte, under the cache key caches always had (SYNTHETIC
phantoms, 32 px)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from spinefx.runtime import PreprocessConfig, prepare_case, read_manifest
from spinefx.train.data import (
    Augment,
    CaseDataset,
    _case_record,
    cache_key,
    preprocess_cases,
    sample_generator,
)

CONFIG = PreprocessConfig(image_size=32)


@pytest.fixture(scope="module")
def cases(phantom_cohorts):
    return read_manifest(phantom_cohorts.manifest(4, 2, seed=3))


def test_default_stack_is_the_runtime_input_byte_for_byte(cases, tmp_path) -> None:
    stack = preprocess_cases(cases, CONFIG, tmp_path, progress=False)
    reference = np.stack([prepare_case(c, CONFIG).array for c in cases])
    assert stack.shape == (len(cases), 6, 32, 32) and stack.dtype == np.float32
    assert stack.tobytes() == reference.tobytes()
    # the cache file is the one runs always wrote: same key, same bytes, read back as is
    legacy = hashlib.sha256(json.dumps(
        {"config": CONFIG.to_dict(), "cases": [_case_record(c) for c in cases]},
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cache_key(cases, CONFIG) == cache_key(cases, CONFIG, roi_variants=1) == legacy
    cached = np.load(tmp_path / f"inputs-{legacy}.npy", allow_pickle=False)
    assert cached.tobytes() == reference.tobytes()
    assert preprocess_cases(cases, CONFIG, tmp_path, progress=False).tobytes() == stack.tobytes()


def test_default_dataset_items_are_augmented_stack_rows(cases) -> None:
    arrays = torch.rand(len(cases), 6, 32, 32, generator=torch.Generator().manual_seed(1))
    ds = CaseDataset(arrays, [0, 1, 0, 1], [0, 2, 3], Augment(), seed=5, stream=2)
    ds.set_epoch(4)
    assert ds.n_variants == 1 and ds.variant_of(2) == 0
    x, target, idx = ds[1]
    expected = Augment()(arrays[2], sample_generator(5, 2, 4, 2))
    assert idx == 2 and float(target) == 0.0 and torch.equal(x, expected)
