"""Teaching mode: a resident reads cases, commits, then sees truth, model and feature key.

The session's reads are written in the readers format `spinefx evaluate --readers` accepts::

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

from spinefx.runtime import FEATURES, Case, SpineFXError
from spinefx.runtime.features import FEATURES_BY_KEY
from spinefx.runtime.stats import confusion_counts

CALLS = ("benign", "malignant")
READERS_HEADER = ("case_id", "reader", "call", "simulated", "features_seen")
TITLE_TO_KEY = {f.title: f.key for f in FEATURES}


def clean_reader(name: str | None) -> str:
    """A reader name safe for a CSV cell: letters, digits, _-. and spaces -> '_'; max 40."""
    text = re.sub(r"\s+", "_", (name or "").strip())
    text = re.sub(r"[^A-Za-z0-9_.\-]", "", text)[:40]
    return text or "resident"


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
    reader: str = "resident"
    n_cases: int = 0
    current: int | None = None          # index into the library's case list
    committed: bool = False
    reads: list[Read] = field(default_factory=list)

    def read_ids(self) -> set[str]:
        return {r.case_id for r in self.reads}

    def next_index(self, cases: list[Case]) -> int | None:
        """The next case (library order) this session has not read, after the current one."""
        done = self.read_ids()
        start = (self.current + 1) if self.current is not None else 0
        for step in range(len(cases)):
            i = (start + step) % len(cases)
            if cases[i].case_id not in done:
                return i
        return None


def commit(session: TeachingSession, case: Case, call: str | None,
           feature_titles: list[str] | None) -> Read:
    if call not in CALLS:
        raise SpineFXError("commit a call first: benign or malignant")
    if case.case_id in session.read_ids():
        raise SpineFXError(f"case {case.case_id} is already committed in this session")
    seen = [TITLE_TO_KEY[t] for t in (feature_titles or []) if t in TITLE_TO_KEY]
    read = Read(case_id=case.case_id, call=call, truth=str(case.label), features_seen=seen,
                features_truth=dict(case.features))
    session.reads.append(read)
    session.committed = True
    return read


def score(reads: list[Read]) -> dict:
    """Accuracy, sensitivity, specificity (malignant = positive) and feature agreement."""
    counts = confusion_counts([r.truth == "malignant" for r in reads],
                              [r.call == "malignant" for r in reads])
    tp, fn, tn, fp = counts["tp"], counts["fn"], counts["tn"], counts["fp"]
    agree, total = 0, 0
    for r in reads:
        for key, present in r.features_truth.items():
            total += 1
            agree += int(bool(present) == (key in r.features_seen))
    model = [r for r in reads if r.model_label is not None]

    def rate(a, b):
        return a / b if b else None

    return {"n": len(reads), "accuracy": rate(tp + tn, len(reads)),
            "sensitivity": rate(tp, tp + fn), "specificity": rate(tn, tn + fp),
            "feature_agreement": rate(agree, total), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "model_accuracy": rate(sum(r.model_label == r.truth for r in model), len(model))}


def score_markdown(reads: list[Read]) -> str:
    s = score(reads)
    if not s["n"]:
        return "No cases read yet in this session."

    def pct(v):
        return "–" if v is None else f"{100 * v:.0f}%"

    line = (f"**Session score** ({s['n']} case{'s' if s['n'] != 1 else ''}): accuracy "
            f"{pct(s['accuracy'])} · sensitivity {pct(s['sensitivity'])} "
            f"({s['tp']}/{s['tp'] + s['fn']} malignant) · specificity {pct(s['specificity'])} "
            f"({s['tn']}/{s['tn'] + s['fp']} benign) · feature agreement "
            f"{pct(s['feature_agreement'])}")
    if s["model_accuracy"] is not None:
        line += f" · the model on the same cases: accuracy {pct(s['model_accuracy'])}"
    return line


def readers_csv(session: TeachingSession) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(READERS_HEADER)
    for r in session.reads:
        writer.writerow([r.case_id, session.reader, r.call, "no", ";".join(r.features_seen)])
    return buf.getvalue()


def feature_key_markdown(case: Case, read: Read) -> str:
    """The 15 features: in this case (if the library knows), ticked by the reader, meaning."""
    known = bool(case.features)
    rows = ["| feature | leans | in this case | you saw | what it means |",
            "|---|---|---|---|---|"]
    for f in FEATURES:
        truth = case.features.get(f.key)
        present = "–" if truth is None else ("**yes**" if truth else "no")
        ticked = "✓" if f.key in read.features_seen else ""
        mark = ""
        if truth is not None and bool(truth) != (f.key in read.features_seen):
            mark = " ✗"
        rows.append(f"| {f.title} | {f.leaning} | {present} | {ticked}{mark} | "
                    f"{f.explanation} |")
    head = ("**Feature key** (✗ = your tick differs from the case)" if known else
            "**Feature key** (this library has no feature flags for the case)")
    return head + "\n\n" + "\n".join(rows)


def truth_markdown(case: Case, read: Read, synthetic: bool) -> str:
    right = read.call == read.truth
    verdict = "correct" if right else "not correct"
    src = " (SYNTHETIC phantom)" if synthetic else ""
    level = f" at {case.level}" if case.level else ""
    return (f"### Truth{src}: **{case.label}**{level} — you called **{read.call}**: {verdict}")


def feature_titles() -> list[str]:
    """Checkbox labels, malignant-leaning first (as the feature list is ordered)."""
    return [f"{f.title}" for f in FEATURES]


def leaning_of(title: str) -> str:
    return FEATURES_BY_KEY[TITLE_TO_KEY[title]].leaning
