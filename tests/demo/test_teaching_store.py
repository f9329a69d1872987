"""The teaching store (SQLite under a data folder) and the teaching score, without a server."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from spinefx.demo import teaching as tm
from spinefx.demo.teaching_store import (
    CODE_ALPHABET,
    CODE_LENGTH,
    TeachingStore,
    case_order,
    default_data_dir,
)
from spinefx.runtime import FEATURES, Case, SpineFXError

CASE_IDS = [f"case_{i:02d}" for i in range(12)]


@pytest.fixture()
def store(tmp_path) -> TeachingStore:
    return TeachingStore(tmp_path / "teaching")


def _read(case_id: str, call: str = "benign", truth: str = "benign", seen=(), present=(),
          model: str | None = None) -> tm.Read:
    return tm.Read(case_id=case_id, call=call, truth=truth, features_seen=list(seen),
                   features_truth={f.key: int(f.key in present) for f in FEATURES},
                   model_label=model)


# ------------------------------------------------------------------------------------- store
def test_data_folder_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPINEFX_TEACHING_DATA", str(tmp_path / "here"))
    assert default_data_dir() == tmp_path / "here"
    monkeypatch.delenv("SPINEFX_TEACHING_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "spinefx" / "teaching"


def test_nothing_is_written_until_a_session_is_created(store):
    assert not store.folder.exists()
    info = store.create_session(CASE_IDS, title="  Tuesday   spine  ")
    assert store.path.is_file() and info.title == "Tuesday spine"
    assert len(info.code) == CODE_LENGTH and set(info.code) <= set(CODE_ALPHABET)
    assert not set(info.code) & set("IO0L1")
    again = store.session(info.code.lower())
    assert again.case_ids == tuple(CASE_IDS) and again.code == info.code
    with sqlite3.connect(store.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_join_needs_a_known_code_and_a_name(store):
    info = store.create_session(CASE_IDS)
    with pytest.raises(SpineFXError, match="no teaching session"):
        store.join("ZZZZZZ" if info.code != "ZZZZZZ" else "YYYYYY", "Ana")
    for blank in ("", "   ", None, "\n\t"):
        with pytest.raises(SpineFXError, match="your name"):
            store.join(info.code, blank)
    with pytest.raises(SpineFXError, match="session code"):
        store.join("  ", "Ana")


def test_the_same_name_resumes_and_different_names_are_separate(store):
    info = store.create_session(CASE_IDS)
    ana, resumed = store.join(info.code, "Ana  Lima")
    assert not resumed and ana.name == "Ana Lima"
    again, resumed = store.join(info.code.lower(), "  ana lima ")
    assert resumed and again == ana
    ben, resumed = store.join(info.code, "Ben")
    assert not resumed and ben.id != ana.id
    store.record_read(ana, _read("case_03", "malignant"))
    assert [r.case_id for r in store.reads_of(again)] == ["case_03"]
    assert store.reads_of(ben) == []
    other = store.create_session(CASE_IDS)   # the same name in another session: someone else
    ana2, resumed = store.join(other.code, "Ana Lima")
    assert not resumed and store.reads_of(ana2) == []
    assert [r.name for r in store.residents(info.code)] == ["Ana Lima", "Ben"]


def test_case_order_is_per_resident_and_deterministic():
    a = case_order("ABCDEF", "Ana", CASE_IDS)
    assert a == case_order("ABCDEF", " ANA ", CASE_IDS)   # the same resident
    assert sorted(a) == CASE_IDS
    assert a != case_order("ABCDEF", "Ben", CASE_IDS)
    assert a != case_order("ABCDEG", "Ana", CASE_IDS)
    assert a != CASE_IDS


def test_a_read_is_stored_once_and_comes_back_whole(store):
    info = store.create_session(CASE_IDS)
    ana, _ = store.join(info.code, "Ana")
    read = _read("case_01", "malignant", "malignant", seen=["epidural_mass"],
                 present=["epidural_mass", "skip_lesions"], model="benign")
    read.model_probability = 0.25
    store.record_read(ana, read)
    with pytest.raises(SpineFXError, match="already committed"):
        store.record_read(ana, _read("case_01"))
    assert store.reads_of(ana) == [read]
    assert store.session_reads(info.code) == [("Ana", read)]


def test_a_failed_write_leaves_nothing_behind(store):
    info = store.create_session(CASE_IDS)
    ana, _ = store.join(info.code, "Ana")
    with pytest.raises(RuntimeError):
        with store._transaction() as con:
            con.execute("INSERT INTO reads (resident, case_id, call, truth, features_seen, "
                        "features_truth, read_at) VALUES (?, 'case_02', 'benign', 'benign', "
                        "'[]', '{}', 0)", (ana.id,))
            raise RuntimeError("the process dies half-way")
    assert store.reads_of(ana) == []


def test_concurrent_threads_write_every_read(store):
    info = store.create_session(CASE_IDS)
    errors: list[BaseException] = []

    def resident(i: int) -> None:
        try:
            # a fresh store object per thread, as two server processes would have
            me, _ = TeachingStore(store.folder).join(info.code, f"resident {i}")
            for case_id in case_order(info.code, me.name, CASE_IDS)[:6]:
                store.record_read(me, _read(case_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=resident, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    rows = store.session_reads(info.code)
    assert len(rows) == 8 * 6 and len({name for name, _ in rows}) == 8


# ------------------------------------------------------------------------------------- score
def test_ticking_nothing_scores_zero_feature_sensitivity():
    reads = [_read("a", present=["epidural_mass", "skip_lesions"]),
             _read("b", present=["fluid_sign"])]
    s = tm.score(reads)
    assert s["feature_sensitivity"] == 0.0
    assert s["feature_specificity"] == 1.0
    assert s["feature_kappa"] == pytest.approx(0.0)


def test_a_perfect_read_scores_one():
    reads = [_read("a", "malignant", "malignant", seen=["epidural_mass"],
                   present=["epidural_mass"], model="malignant"),
             _read("b", "benign", "benign", seen=["fluid_sign", "spared_marrow"],
                   present=["fluid_sign", "spared_marrow"], model="malignant")]
    s = tm.score(reads)
    assert (s["accuracy"], s["sensitivity"], s["specificity"]) == (1.0, 1.0, 1.0)
    assert (s["feature_sensitivity"], s["feature_specificity"]) == (1.0, 1.0)
    assert s["feature_kappa"] == pytest.approx(1.0)
    assert s["model_accuracy"] == 0.5 and s["model_agreement"] == 0.5


def test_kappa_on_a_known_table():
    # 20 tp, 5 fn, 15 tn, 10 fp (n = 50): observed 0.70, chance (25*30 + 25*20)/2500 = 0.50
    assert tm.cohen_kappa(20, 5, 15, 10) == pytest.approx(0.4)
    assert tm.cohen_kappa(0, 0, 10, 0) is None     # one category only: undefined
    assert tm.cohen_kappa(0, 0, 0, 0) is None


def test_per_feature_counts_and_call_scores():
    reads = [_read("a", "malignant", "malignant", seen=["epidural_mass"],
                   present=["epidural_mass", "skip_lesions"]),
             _read("b", "malignant", "benign", seen=["epidural_mass"]),
             _read("c", "benign", "malignant", present=["skip_lesions"])]
    s = tm.score(reads)
    assert (s["tp"], s["fn"], s["tn"], s["fp"]) == (1, 1, 0, 1)
    assert s["sensitivity"] == 0.5 and s["specificity"] == 0.0
    assert s["per_feature"]["epidural_mass"] == {"tp": 1, "fn": 0, "tn": 1, "fp": 1}
    assert s["per_feature"]["skip_lesions"] == {"tp": 0, "fn": 2, "tn": 1, "fp": 0}
    assert s["feature_sensitivity"] == pytest.approx(1 / 3)
    assert s["model_accuracy"] is None


def test_the_checklist_does_not_reveal_directions():
    titles = tm.feature_titles()
    assert titles == sorted(titles, key=str.casefold) and len(titles) == 15
    assert "leaning" not in tm.CHECKLIST_LABEL and "malignant" not in tm.CHECKLIST_LABEL
    case = Case(case_id="c", label="benign", t1=Path("t1"), t2=Path("t2"), slice=1,
                box=(0, 0, 4, 4), features={f.key: 0 for f in FEATURES})
    assert tm.md_escape("**Ana** [x](y)") == r"\*\*Ana\*\* \[x\]\(y\)"
    key = tm.feature_key_markdown(case, _read("c"))
    assert "| malignant |" in key and "| benign |" in key   # revealed after the commit


# ---------------------------------------------------------------------- handlers over a store
@pytest.fixture()
def ctx(tiny_model, demo_roots, tmp_path):
    from spinefx.demo.context import DemoContext

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return DemoContext.create(tiny_model, None, demo_roots["cache"], 1, tmp_path,
                              [str(uploads)], 0.0)


def test_a_session_from_creation_to_export(ctx, store):
    from spinefx.demo import teaching_dashboard as td
    from spinefx.demo import teaching_handlers as th

    made = td.create_session(ctx, store, "Tuesday")
    code, key = made["teacher_state"]["code"], made["teacher_state"]["key"]
    assert code in made["teacher_status"] and key in made["teacher_status"]
    blank = th.next_case(ctx, store, None, code, "  ")
    assert "your name" in blank["t_status"]

    ana = th.next_case(ctx, store, None, code.lower(), "Ana")
    st = ana["teach_state"]
    assert "Case 1 of 12" in ana["case_md"] and ana["teach_browser"] == {"code": code,
                                                                          "name": "Ana"}
    first = st.current
    title = tm.feature_titles()[0]
    done = th.commit_read(ctx, store, st, "malignant", [title])
    assert "Truth" in done["reveal_md"] and "The model" in done["reveal_md"]
    assert "Session score" in done["score_md"]

    again = th.resume(ctx, store, {"code": code, "name": "ANA"})   # a reload, or a new tab
    st2 = again["teach_state"]
    assert "Welcome back" in again["t_status"] and "Case 2 of 12" in again["case_md"]
    assert [r.case_id for r in st2.reads] == [first] and st2.current == st.next_case_id()
    assert again["score_md"] == done["score_md"]
    dup = th.commit_read(ctx, store, st, "benign", [])   # the old tab commits its case again
    assert "already committed" in dup["t_status"]

    ben = th.next_case(ctx, store, None, code, "Ben")["teach_state"]
    assert ben.resident_id != st.resident_id and not ben.reads
    assert ben.order != st.order and sorted(ben.order) == sorted(st.order)
    th.commit_read(ctx, store, ben, "benign", [])

    board = td.refresh(ctx, store, made["teacher_state"])
    rows = {row[0]: row for row in board["dash_residents"]}
    assert set(rows) == {"Ana", "Ben"} and rows["Ana"][1] == 1 and rows["Ben"][1] == 1
    assert "2 residents" in board["dash_md"] and len(board["dash_cases"]) == len({first,
                                                                                 ben.reads[0].case_id})
    n_cases = len({first, ben.reads[0].case_id})
    assert f"**The model** on the {n_cases} case" in board["dash_md"]
    export = Path(board["export_btn"])
    assert store.exports_dir in export.parents
    readers = pytest.importorskip("spinefx.train.readers")
    table = readers.read_readers_csv(export, known_cases=st.order)
    assert table.readers == ["Ana", "Ben"] and not table.simulated
    assert table.calls_of("Ana") == {first: "malignant"}
    unchanged = td.refresh(ctx, store, board["teacher_state"])
    assert "export_btn" not in unchanged       # rewritten only when the reads change
    wrong = td.watch_session(ctx, store, code, "WRONGKEY")
    assert "teacher key" in wrong["teacher_status"] and "dash_residents" not in wrong


def test_practice_needs_no_code_and_writes_no_store(ctx, store):
    from spinefx.demo import teaching_handlers as th

    out = th.next_case(ctx, store, None, "", "")
    assert "Practice" in out["who_md"] and "Case 1 of 12" in out["case_md"]
    done = th.commit_read(ctx, store, out["teach_state"], "benign", [])
    assert "Truth" in done["reveal_md"] and not store.folder.exists()


def test_a_case_added_later_keeps_the_order_of_the_others():
    before = case_order("ABCDEF", "Ana", CASE_IDS)
    after = case_order("ABCDEF", "Ana", CASE_IDS + ["added_case"])
    assert [c for c in after if c != "added_case"] == before


def test_an_instructor_adds_a_case_from_a_dicom_study(ctx, store, phantom_study, tmp_path):
    import pydicom

    from spinefx.demo import teaching_dashboard as td
    from spinefx.demo import teaching_handlers as th

    t1_dir, t2_dir, truth = phantom_study
    files = []
    for series in (t1_dir, t2_dir):       # copies carrying a known patient name
        for p in sorted(series.glob("*.dcm")):
            ds = pydicom.dcmread(p)
            ds.PatientName, ds.PatientID = "ZZSECRET^TEACHNAME", "ZZ-ID-5521"
            target = tmp_path / f"{series.name}_{p.name}"
            ds.save_as(target)
            files.append(str(target))
    board = td.create_session(ctx, store, "with my case")
    state = board["teacher_state"]
    box = ",".join(str(int(v)) for v in truth.box)
    title = tm.feature_titles()[3]
    args = (files, None, None, None, "malignant", truth.slice, box, "l1", [title],
            "Look at the posterior wall.", "real")
    refused = td.add_case(ctx, store, state, *args, False)
    assert "confirm" in refused["add_status"] and not store.library_dir.exists()
    no_box = td.add_case(ctx, store, state, *args[:6], "", *args[7:], True)
    assert "box" in no_box["add_status"]
    added = td.add_case(ctx, store, state, *args, True)
    assert "instructor_001" in added["add_status"] and state["code"] in added["add_status"]

    kept = sorted(str(p.relative_to(store.library_dir)) for p in store.library_dir.rglob("*")
                  if p.is_file())
    assert kept == ["cases.json", "instructor_001/t1.npz", "instructor_001/t2.npz",
                    "manifest.csv"]
    for p in store.folder.rglob("*"):
        if p.is_file():
            assert b"ZZSECRET" not in p.read_bytes() and b"ZZ-ID-5521" not in p.read_bytes()
    assert "instructor_001" in store.session(state["code"]).case_ids
    case = th.all_cases(ctx, store)["instructor_001"]
    assert case.label == "malignant" and case.level == "L1" and case.slice == truth.slice
    assert case.features[tm.TITLE_TO_KEY[title]] == 1 and sum(case.features.values()) == 1

    joined = th.next_case(ctx, store, None, state["code"], "Cleo")["teach_state"]
    joined.current = "instructor_001"            # jump to the instructor's case
    shown = th.teaching_views(ctx, store, joined)
    assert shown["t_t1"] and shown["t_t2"]
    done = th.commit_read(ctx, store, joined, "malignant", [title])
    assert "Instructor-provided case · real MRI" in done["reveal_md"]
    assert "posterior wall" in done["reveal_md"] and "Truth (SYNTHETIC" not in done["reveal_md"]
