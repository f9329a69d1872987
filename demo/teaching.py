"""Teaching mode: a resident reads cases, commits, then sees truth, model and feature key.

Scoring (:func:`score`): the call against the truth (malignant = positive: accuracy,
sensitivity, specificity) and the ticked features against the case's feature key, each
(case, feature) one decision: sensitivity (present features ticked), specificity (absent
features left unticked) and Cohen's kappa over all decisions. Ticking nothing scores
sensitivity 0 — leaving absent features unticked is not "agreement" that earns credit alone.

The reads are written in the readers format `spinefx evaluate --readers` accepts::

    case_id,reader,call,simulated,features_seen
    case_0001,resident_a,malignant,no,convex_posterior_border;epidural_mass

(``simulated`` is ``no``: these are real human reads; ``features_seen`` is an extra column the
readers parser ignores.)
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Iterable

from spinefx.runtime import FEATURES, Case, SpineFXError
from spinefx.runtime.features import FEATURES_BY_KEY
from spinefx.runtime.stats import confusion_counts

CALLS = ("benign", "malignant")
READERS_HEADER = ("case_id", "reader", "call", "simulated", "features_seen")
TITLE_TO_KEY = {f.title: f.key for f in FEATURES}
# The checklist must not tell residents which way a feature points: one neutral order.
CHECKLIST_LABEL = "features you see (tick every one present; listed alphabetically)"


def clean_reader(name: str | None) -> str:
    """A reader name safe for a file name: letters, digits, _-. and spaces -> '_'; max 40."""
    text = re.sub(r"\s+", "_", (name or "").strip())
    text = re.sub(r"[^A-Za-z0-9_.\-]", "", text)[:40]
    return text or "resident"


def md_escape(text: str) -> str:
    """User text (a name, a title) shown literally inside Markdown."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)


@dataclass
class Read:
    case_id: str
    call: str
    truth: str
    features_seen: list[str]
    features_truth: dict[str, int]
    model_probability: float | None = None
    model_label: str | None = None


@dataclass
class TeachingSession:
    """One browser tab's resident. ``code`` None: practising alone (kept in this tab only);
    otherwise the reads are the store's, ``order`` this resident's case order."""
    reader: str = "practice"
    code: str | None = None
    resident_id: int | None = None
    order: list[str] = field(default_factory=list)
    current: str | None = None          # the case id on screen
    committed: bool = False
    reads: list[Read] = field(default_factory=list)

    def read_ids(self) -> set[str]:
        return {r.case_id for r in self.reads}

    def next_case_id(self) -> str | None:
        """The first case of this resident's order not read yet."""
        done = self.read_ids()
        return next((c for c in self.order if c not in done), None)


def make_read(session: TeachingSession, case: Case, call: str | None,
              feature_titles: list[str] | None) -> Read:
    """The resident's read of ``case`` (not yet added to the session)."""
    if call not in CALLS:
        raise SpineFXError("commit a call first: benign or malignant")
    if case.case_id in session.read_ids():
        raise SpineFXError(f"case {case.case_id} is already committed in this session")
    seen = [TITLE_TO_KEY[t] for t in (feature_titles or []) if t in TITLE_TO_KEY]
    return Read(case_id=case.case_id, call=call, truth=str(case.label), features_seen=seen,
                features_truth={k: int(v) for k, v in case.features.items()})


def commit(session: TeachingSession, case: Case, call: str | None,
           feature_titles: list[str] | None) -> Read:
    read = make_read(session, case, call, feature_titles)
    session.reads.append(read)
    session.committed = True
    return read


def _rate(a: float, b: float) -> float | None:
    return a / b if b else None


def cohen_kappa(tp: int, fn: int, tn: int, fp: int) -> float | None:
    """Cohen's kappa of a 2x2 agreement table (truth x reader); None where it is undefined
    (every decision in one category for both raters: chance agreement is 1)."""
    n = tp + fn + tn + fp
    if not n:
        return None
    observed = (tp + tn) / n
    chance = ((tp + fn) * (tp + fp) + (tn + fp) * (tn + fn)) / (n * n)
    return None if chance >= 1 else (observed - chance) / (1 - chance)


def feature_counts(reads: Iterable[Read]) -> dict[str, dict[str, int]]:
    """Per feature key: tp (present, ticked), fn (present, missed), tn, fp over the reads whose
    case has a feature key."""
    counts = {f.key: {"tp": 0, "fn": 0, "tn": 0, "fp": 0} for f in FEATURES}
    for r in reads:
        for key, present in r.features_truth.items():
            if key not in counts:
                continue
            ticked = key in r.features_seen
            cell = ("tp" if ticked else "fn") if present else ("fp" if ticked else "tn")
            counts[key][cell] += 1
    return counts


def score(reads: list[Read]) -> dict:
    """The call (accuracy, sensitivity, specificity, confusion; agreement with the model where
    the model's call is known) and the features (pooled sensitivity, specificity, kappa)."""
    counts = confusion_counts([r.truth == "malignant" for r in reads],
                              [r.call == "malignant" for r in reads])
    tp, fn, tn, fp = counts["tp"], counts["fn"], counts["tn"], counts["fp"]
    per_feature = feature_counts(reads)
    f_tp, f_fn, f_tn, f_fp = (sum(c[k] for c in per_feature.values())
                              for k in ("tp", "fn", "tn", "fp"))
    model = [r for r in reads if r.model_label is not None]
    return {"n": len(reads), "accuracy": _rate(tp + tn, len(reads)),
            "sensitivity": _rate(tp, tp + fn), "specificity": _rate(tn, tn + fp),
            "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "feature_sensitivity": _rate(f_tp, f_tp + f_fn),
            "feature_specificity": _rate(f_tn, f_tn + f_fp),
            "feature_kappa": cohen_kappa(f_tp, f_fn, f_tn, f_fp),
            "per_feature": per_feature,
            "model_n": len(model),
            "model_agreement": _rate(sum(r.model_label == r.call for r in model), len(model)),
            "model_accuracy": _rate(sum(r.model_label == r.truth for r in model), len(model))}


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def score_markdown(reads: list[Read]) -> str:
    s = score(reads)
    if not s["n"]:
        return "No cases read yet in this session."
    kappa = "–" if s["feature_kappa"] is None else f"{s['feature_kappa']:.2f}"
    line = (f"**Session score** ({s['n']} case{'s' if s['n'] != 1 else ''}): accuracy "
            f"{pct(s['accuracy'])} · sensitivity {pct(s['sensitivity'])} "
            f"({s['tp']}/{s['tp'] + s['fn']} malignant) · specificity {pct(s['specificity'])} "
            f"({s['tn']}/{s['tn'] + s['fp']} benign)\n\n"
            f"**Features** (your ticks against the key): sensitivity "
            f"{pct(s['feature_sensitivity'])} of the features present, specificity "
            f"{pct(s['feature_specificity'])} of those absent, Cohen's kappa {kappa}")
    if s["model_accuracy"] is not None:
        line += (f"\n\n**The model** on the same cases: accuracy {pct(s['model_accuracy'])}; "
                 f"your call agreed with it on {pct(s['model_agreement'])}")
    return line


def reads_csv(rows: Iterable[tuple[str, Read]]) -> str:
    """(reader name, read) rows in the readers CSV format."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(READERS_HEADER)
    for reader, r in rows:
        writer.writerow([r.case_id, reader, r.call, "no", ";".join(r.features_seen)])
    return buf.getvalue()


def readers_csv(session: TeachingSession) -> str:
    return reads_csv((session.reader, r) for r in session.reads)


def checklist_features() -> list:
    return sorted(FEATURES, key=lambda f: f.title.casefold())


def feature_key_markdown(case: Case, read: Read) -> str:
    """The 15 features (checklist order): in this case (if the library knows), ticked by the
    reader, which way it leans and what it means."""
    known = bool(case.features)
    rows = ["| feature | in this case | you ticked | leans | what it means |",
            "|---|---|---|---|---|"]
    for f in checklist_features():
        truth = case.features.get(f.key)
        present = "–" if truth is None else ("**yes**" if truth else "no")
        ticked = f.key in read.features_seen
        mark = "✓" if ticked else ""
        if truth is not None and bool(truth) != ticked:
            mark += " ✗ missed" if truth else " ✗ not present"
        rows.append(f"| {f.title} | {present} | {mark} | {f.leaning} | {f.explanation} |")
    head = ("**Feature key** (✗ = your tick differs from the case)" if known else
            "**Feature key** (this library has no feature flags for the case)")
    return head + "\n\n" + "\n".join(rows)


def truth_markdown(case: Case, read: Read, source: str = "") -> str:
    """``source``: where the case comes from when the user must be told (e.g. "SYNTHETIC
    phantom")."""
    right = read.call == read.truth
    verdict = "correct" if right else "not correct"
    src = f" ({source})" if source else ""
    level = f" at {case.level}" if case.level else ""
    return (f"### Truth{src}: **{case.label}**{level} — you called **{read.call}**: {verdict}")


def feature_titles() -> list[str]:
    """Checkbox labels in a neutral (alphabetical) order: the order says nothing about which
    way a feature leans."""
    return [f.title for f in checklist_features()]


def leaning_of(title: str) -> str:
    return FEATURES_BY_KEY[TITLE_TO_KEY[title]].leaning
