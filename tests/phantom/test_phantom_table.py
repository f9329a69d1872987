"""No hidden class signal: the label reaches nothing but the feature draw.

Two checks. Structural: the names ``label`` / ``difficulty`` (as variables, parameters,
attributes or keywords) appear in the phantom's modules only where the class belongs: the
feature table (appearance.py), :func:`render_case` handing them to ``draw_features`` and
storing them on the case, and the orchestration modules that plan cohorts and write manifests;
no module that draws or paints a case may see them. Statistical (parameters only, no pixels):
with the flags drawn at difficulty 2 (one feature distribution for both classes) every numeric
lesion, spine and confounder parameter has one distribution for both classes; at difficulty 1
only the flag-dependent lesion parameters differ.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from spinefx.phantom import case
from spinefx.phantom.confounders import Blob, EndplateChange, Osteophyte, item_parameters

PHANTOM = Path(case.__file__).parent
CLASS_NAMES = {"label", "difficulty"}
# Modules that carry the label on purpose, never into pixels or headers: the table, the
# cohort / stream planners (patients, manifest, cohort.json), the DICOM writer's convenience
# wrapper (label -> render_case only, checked below) and the contact sheet's captions.
ORCHESTRATION = {"appearance.py", "cohort.py", "stream.py", "dicom_writer.py",
                 "contact_sheet.py", "__init__.py"}
# What render_case may hand the label / difficulty to (float(): the stored copy).
RENDER_CASE_SINKS = {"draw_features", "_check_request", "PhantomCase", "float"}
APPEARANCE_NAMES = {"LABELS", "PROBABILITIES", "class_gap", "draw_features",
                    "feature_probabilities", "apply_overrides"}


def _class_uses(tree: ast.AST) -> list[ast.AST]:
    """Every node that names the label or the difficulty."""
    uses: list[ast.AST] = []
    for node in ast.walk(tree):
        if ((isinstance(node, ast.Name) and node.id in CLASS_NAMES)
                or (isinstance(node, ast.arg) and node.arg in CLASS_NAMES)
                or (isinstance(node, ast.Attribute) and node.attr in CLASS_NAMES)
                or (isinstance(node, ast.keyword) and node.arg in CLASS_NAMES)):
            uses.append(node)
    return uses


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "?"


def _enclosing(node: ast.AST, parents: dict, kinds: tuple) -> ast.AST | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, kinds):
            return node
    return None


def _parse(name: str) -> ast.Module:
    return ast.parse((PHANTOM / name).read_text(encoding="utf-8"), filename=name)


def test_modules_that_draw_or_paint_never_name_the_label() -> None:
    modules = sorted(p.name for p in PHANTOM.glob("*.py"))
    assert "lesion.py" in modules and "confounders.py" in modules
    for name in modules:
        if name in ORCHESTRATION or name == "case.py":
            continue
        tree = _parse(name)
        found = [getattr(n, "lineno", "?") for n in _class_uses(tree)]
        assert not found, (f"{name} names label/difficulty at lines {found}: only the feature "
                           f"flags may carry the class (or list the module in ORCHESTRATION "
                           f"if it only plans cohorts / writes manifests)")
        for node in ast.walk(tree):  # nor reaches the table by another name
            if isinstance(node, ast.ImportFrom) and node.module in ("appearance",
                                                                   "spinefx.phantom.appearance"):
                imported = {a.name for a in node.names} & APPEARANCE_NAMES
                assert not imported, f"{name} imports {imported} from the feature table"


def test_render_case_hands_the_label_only_to_the_feature_draw() -> None:
    tree = _parse("case.py")
    parents = _parents(tree)
    for node in _class_uses(tree):
        where = _enclosing(node, parents, (ast.FunctionDef, ast.ClassDef))
        owner = getattr(where, "name", "<module>")
        line = getattr(node, "lineno", "?")
        if owner in ("PhantomCase", "_check_request"):
            continue  # the stored fields / the validation
        assert owner == "render_case", f"case.py:{line}: {owner} names label/difficulty"
        if isinstance(node, ast.arg):
            continue  # render_case's own parameters
        if isinstance(node, ast.keyword):
            call = parents[node]
        else:
            call = _enclosing(node, parents, (ast.Call,))
        assert isinstance(call, ast.Call) and _callee(call) in RENDER_CASE_SINKS, (
            f"case.py:{line}: render_case passes label/difficulty to "
            f"{_callee(call) if isinstance(call, ast.Call) else 'an expression'}")
        if _callee(call) == "float":  # only as the stored PhantomCase(difficulty=float(...))
            outer = _enclosing(call, parents, (ast.Call,))
            assert outer is not None and _callee(outer) == "PhantomCase", f"case.py:{line}"


def test_the_dicom_writer_passes_the_label_to_render_case_only() -> None:
    tree = _parse("dicom_writer.py")
    parents = _parents(tree)
    for node in _class_uses(tree):
        line = getattr(node, "lineno", "?")
        assert not isinstance(node, ast.Attribute), f"dicom_writer.py:{line} reads case.label"
        if isinstance(node, ast.arg):
            continue
        call = _enclosing(node, parents, (ast.Call,))
        assert isinstance(call, ast.Call) and _callee(call) == "render_case", \
            f"dicom_writer.py:{line}: the label goes somewhere else than render_case"


def test_the_structural_check_catches_a_class_conditional_lesion_draw() -> None:
    """The old lesion.py (label -> t1_ratio) must fail the rule the tests above apply."""
    old = ("from .appearance import LABELS, class_gap\n"
           "def draw_lesion(rng, label, flags, level, difficulty):\n"
           "    sign = 1.0 if label == LABELS[1] else -1.0\n"
           "    return rng.normal(0.45 + sign * 0.06 * class_gap(difficulty), 0.07)\n")
    assert len(_class_uses(ast.parse(old))) >= 4


class _Captured(Exception):
    def __init__(self, scene) -> None:
        self.scene = scene


def _scene(seed: int, label: str, difficulty: float):
    """render_case up to its pixels: the drawn lesion, spine and confounders."""
    try:
        case.render_case(seed, label, difficulty)
    except _Captured as got:
        return got.scene
    raise AssertionError("render_case did not reach _render")


def _parameters(scene) -> dict[str, list[float]]:
    """Every numeric parameter of one case's draws (per case, or per confounder item)."""
    les, lv = scene.lesion, scene.spec.levels
    out: dict[str, list[float]] = {}

    def put(key: str, value: float) -> None:
        out.setdefault(key, []).append(float(value))

    for key, value in vars(les).items():
        if isinstance(value, (int, float)) and key not in ("flags",):
            put(key, value)
        elif isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
            for i, v in enumerate(value):
                put(f"{key}[{i}]", v)
    put("shape", ["wedge", "biconcave", "crush"].index(les.shape))
    put("endplate", ["top", "bottom", "both"].index(les.endplate))
    put("pattern", ["diffuse", "spared", "partial"].index(les.pattern))
    put("level", lv.index(les.level))
    put("n_skips", len(les.skips))
    for skip in les.skips:
        for i, v in enumerate(skip[1:]):
            put(f"skip[{i}]", v)
    put("other_fracture", lv.index(les.other_fracture[0]) - lv.index(les.level))
    put("other_fracture_wedge", les.other_fracture[1])
    put("n_degenerate", lv.degenerate.sum())
    put("lesion_height", lv.height[lv.index(les.level)])
    put("n_slices", len(scene.x_spine))
    items = scene.confounders.items
    for kind in (Blob, EndplateChange, Osteophyte):
        put(f"n_{kind.__name__}", sum(isinstance(it, kind) for it in items))
    for it in items:
        for key, value in item_parameters(it).items():
            put(f"{type(it).__name__}.{key}", value)
    return out


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest CDF difference)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def _ks_limit(n: int, m: int) -> float:
    """KS critical value at alpha = 1e-4 (about 60 comparisons: ~1 % family-wise)."""
    return float(np.sqrt(-np.log(1e-4 / 2) / 2) * np.sqrt((n + m) / (n * m)))


def _class_draws(monkeypatch, difficulty: float, n: int) -> dict[str, dict[str, np.ndarray]]:
    def stop(scene, *rest):
        raise _Captured(scene)

    monkeypatch.setattr(case, "_render", stop)
    # the texture lattices are pixels' noise, not parameters: skip their cost
    monkeypatch.setattr(case, "lattice", lambda rng, extent, cell: np.zeros((2, 2), np.float32))
    out = {}
    for label in ("benign", "malignant"):
        pooled: dict[str, list[float]] = {}
        for seed in range(n):
            for key, values in _parameters(_scene(10_000 + seed, label, difficulty)).items():
                pooled.setdefault(key, []).extend(values)
        out[label] = {k: np.asarray(v) for k, v in pooled.items()}
    return out


def _differences(draws: dict[str, dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    benign, malignant = draws["benign"], draws["malignant"]
    assert set(benign) == set(malignant) or abs(len(benign) - len(malignant)) < 3
    out = {}
    for key in sorted(set(benign) & set(malignant)):
        a, b = benign[key], malignant[key]
        if len(a) >= 30 and len(b) >= 30:
            out[key] = (_ks(a, b), _ks_limit(len(a), len(b)))
    return out


@pytest.fixture(scope="module")
def mp():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# the lesion parameters drawn from a feature flag (lesion.draw_lesion)
FLAG_DEPENDENT = {"bulge": "convex_posterior_border", "depth_frac": "spared_marrow",
                  "pattern": "diffuse_low_t1 / spared_marrow",
                  "t2_ratio": "heterogeneous_high_t2"}


def test_at_difficulty_2_every_parameter_has_one_distribution(mp) -> None:
    diffs = _differences(_class_draws(mp, 2.0, 700))
    assert {"t1_ratio", "loss", "n_Blob", "Blob.r", "EndplateChange.depth",
            "Osteophyte.length"} <= set(diffs)  # the comparison covers what matters
    for key, (ks, limit) in diffs.items():
        assert ks < limit, f"{key}: KS {ks:.3f} >= {limit:.3f} between the classes"


def test_at_difficulty_1_only_flag_dependent_parameters_differ(mp) -> None:
    diffs = _differences(_class_draws(mp, 1.0, 700))
    for key, (ks, limit) in diffs.items():
        if key in FLAG_DEPENDENT:
            # the check has the power to see a class difference where one exists
            assert ks > limit, f"{key} ({FLAG_DEPENDENT[key]}) should differ: KS {ks:.3f}"
        else:
            assert ks < limit, f"{key}: KS {ks:.3f} >= {limit:.3f} between the classes"
