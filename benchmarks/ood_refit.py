"""Re-fit only the ``ood`` block of an exported model from a manifest, into a copy of the model
folder (the ONNX files are copied unchanged; model.json's other keys are kept):

* the body-fraction threshold (:func:`spinefx.export.ood.case_body_fraction` and
  :func:`~spinefx.export.ood.fit_body_fraction`, the code the exporter runs), and
* with ``--k K``, the feature Gaussian too (:func:`spinefx.export.ood.fit_ood` on the model's
  pooled features of the manifest's cases; ``--shrinkage`` is not offered: not measured).

For a model exported before the body-fraction signal existed, e.g.::

    python benchmarks/ood_refit.py /work/runs/bundle1 /tmp/bundle1-ood \\
        --manifest /work/runs/gate200/manifest.csv          # 200 held-out SYNTHETIC phantoms
    python benchmarks/ood.py /tmp/bundle1-ood --cases 100
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def case_features(predictor, cases) -> list:
    """The model's pooled features of each case at the box the runtime gives the model: the
    manifest box (or click) fitted to the body under its centre when ``predictor.snap_roi``
    (:func:`spinefx.runtime.roi_snap.snap_roi`, as the exporter fits them), else as given."""
    from spinefx.runtime import align_pair, build_six_channel, load_volume
    from spinefx.runtime.roi_snap import snap_roi

    rows = []
    for case in cases:
        pair = align_pair(load_volume(case.t1, "T1"), load_volume(case.t2, "T2"))
        snap = snap_roi(pair.t1, case.slice, case.box, case.center, case.size_mm,
                        predictor.config.default_size_mm) if predictor.snap_roi else None
        roi = (dict(box=snap.box) if snap is not None and snap.snapped else
               dict(box=case.box, center=case.center, size_mm=case.size_mm))
        x = build_six_channel(pair, case.slice, config=predictor.config, **roi).array
        rows.append(predictor.run_all(x)[2][0])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="exported model folder (read only)")
    ap.add_argument("out", help="new folder: the copy with the re-fitted ood block")
    ap.add_argument("--manifest", required=True, help="cases the model never trained on")
    ap.add_argument("--k", type=int, default=None, help="also re-fit the feature Gaussian")
    ap.add_argument("--keep-box", action="store_true",
                    help="fit the features at the boxes as given (the runtime fits each box to "
                         "the body under its centre unless predict --keep-box)")
    ap.add_argument("--body-quantile", type=float, default=None,
                    help="quantile of the cases' body fractions (default BODY_QUANTILE)")
    args = ap.parse_args(argv)
    import numpy as np

    from spinefx.export.ood import (
        BODY_QUANTILE,
        FITTED_BOXES,
        case_body_fraction,
        fit_body_fraction,
        fit_ood,
        model_json_text,
    )
    from spinefx.runtime import read_manifest
    from spinefx.runtime.inference import Predictor

    args.body_quantile = BODY_QUANTILE if args.body_quantile is None else args.body_quantile
    src, out = Path(args.model), Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists: choose a new folder")
    shutil.copytree(src, out)
    spec = json.loads((out / "model.json").read_text())
    cases = read_manifest(args.manifest, allow_outside=True)
    source = Path(args.manifest).name
    ood = spec.get("ood")
    if args.k is not None or not isinstance(ood, dict):
        predictor = Predictor(out, snap_roi=not args.keep_box)
        if predictor.ood is None and "features" not in predictor.spec.raw.get("outputs", {}):
            raise SystemExit(f"{src} has no 'features' output: {predictor.ood_reason}")
        features = np.asarray(case_features(predictor, cases), np.float64)
        ood = fit_ood(features, cases, source, k=args.k or 32)
        ood["fitted_on"]["boxes"] = "the manifest boxes as given" if args.keep_box \
            else FITTED_BOXES
    default_size = float(spec["preprocessing"]["default_size_mm"])
    fractions = np.array([case_body_fraction(c, default_size) for c in cases])
    print("body fractions of the manifest's cases: quantiles "
          + ", ".join(f"{q:g}: {np.quantile(fractions, q):.3f}"
                      for q in (0.01, 0.02, 0.05, 0.1, 0.25, 0.5))
          + f"; {np.mean(fractions < 0.05):.1%} under 0.05")
    spec["ood"] = {**ood, **fit_body_fraction(fractions, source, args.body_quantile)}
    print(f"body-fraction threshold {spec['ood']['body_fraction_threshold']} "
          f"({args.body_quantile:g} quantile)")
    (out / "model.json").write_text(model_json_text(spec))
    print(f"wrote {out / 'model.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
