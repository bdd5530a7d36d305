"""Explorer pages 2 (staleness study) and 3 (run browser) under AppTest, on a real tiny study.

The pages read directories through ``m2po_lab.rundir`` (tested in test_rundir.py); here: they
render, their widgets change what they show, every headline comes from the run the controls
name, and broken directories give an ``st.error``.
"""

from __future__ import annotations

import json

import pytest
from app_helpers import HOME, metric, open_page, write_run

from m2po_lab import rundir as rd

PAGE2 = "pages/2_Staleness_study.py"
PAGE3 = "pages/3_Run_browser.py"






@pytest.fixture(autouse=True)
def _cache(tmp_path, tmp_path_factory, monkeypatch):
    """Live studies train into a fresh folder, never a shared cache; the runs root holds every test's tmp dir."""
    monkeypatch.setenv("M2PO_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("M2PO_LAB_RUNS_ROOT", str(tmp_path_factory.getbasetemp()))


def _row(update: int, **extra) -> dict:
    return {**{k: 0.0 for k in rd.REQUIRED_KEYS}, "update": update, "reward": 0.1 * update, **extra}


def _key(at, kind: str, prefix: str) -> str:
    """The key of the one ``kind`` widget whose key starts with ``prefix`` (keys carry the directory)."""
    keys = [w.key for w in getattr(at, kind) if w.key and w.key.startswith(prefix)]
    assert len(keys) == 1, keys
    return keys[0]


def _open_study(apptest, path):
    at = open_page(apptest, PAGE2)
    at.radio(key="study_source").set_value("Open a study directory").run()
    at.text_input(key="study_dir").input(str(path)).run()
    assert not at.exception, at.exception
    return at


def _open_dir(apptest, path):
    at = open_page(apptest, PAGE3)
    at.text_input(key="run_dir").input(str(path)).run()
    assert not at.exception, at.exception
    return at


# ---------------------------------------------------------------- home and defaults
def test_home_links_everyopen_page(apptest):
    at = apptest.from_file(str(HOME), default_timeout=60).run()
    assert not at.exception
    assert [el.proto.page for el in at.get("page_link")] == ["Importance_weights", "Staleness_study", "Run_browser", "Systems"]


@pytest.mark.parametrize("page, hint", [(PAGE2, "Run the study"), (PAGE3, "No study or llm directory found")])
def test_pages_render_defaults(apptest, page, hint, tmp_path, monkeypatch):
    monkeypatch.setenv("M2PO_LAB_RUNS_ROOT", str(tmp_path / "empty"))  # nothing to find
    at = open_page(apptest, page)
    assert any(hint in i.value for i in at.info)
    assert not at.error and "Traceback" not in str(at)


# ---------------------------------------------------------------- page 2
def test_page2_opens_a_study(apptest, study_dir):
    at = _open_study(apptest, study_dir)
    assert len(at.get("vega_lite_chart")) == 4 and not at.get("image")  # rewards, clip/frac, entropy, log r hist
    summary = json.loads((study_dir / "summary.json").read_text())
    steady = {(r["method"], r["staleness"]): r["clip_frac_steady"] for r in summary["runs"]}
    assert metric(at, "grpo clip/frac") == f"{100 * steady['grpo', 8]:.3f}%"  # the largest staleness first
    assert metric(at, "m2po clip/frac") == f"{100 * steady['m2po', 8]:.3f}%"
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 4  # summary: 2 methods x 2 staleness
    assert any("Phenomena" in m.value and "GRPO degrades with staleness" in m.value for m in at.markdown)


def test_page2_staleness_changes_mask_fraction(apptest, study_dir):
    at = _open_study(apptest, study_dir)
    stale = metric(at, "grpo clip/frac")
    at.select_slider(key=_key(at, "select_slider", "staleness_shown@")).set_value(0).run()
    assert not at.exception
    fresh = metric(at, "grpo clip/frac")
    assert float(fresh.rstrip("%")) < float(stale.rstrip("%")), (fresh, stale)
    assert len(at.get("vega_lite_chart")) == 4


def test_page2_histogram_slider_moves_through_updates(apptest, study_dir):
    at = _open_study(apptest, study_dir)
    hist = _key(at, "select_slider", "hist_update@")
    assert at.select_slider(key=hist).options == ["0", "4", "8", "11"]
    last = metric(at, "grpo M2 at this update")
    at.select_slider(key=hist).set_value(8).run()
    assert not at.exception and metric(at, "grpo M2 at this update") != last
    at.slider(key="clip_smooth").set_value(1).run()
    assert not at.exception


def test_page2_broken_study_shows_an_error(apptest, tmp_path, study_dir):
    (tmp_path / "runs").mkdir()
    (tmp_path / "config.json").write_text((study_dir / "config.json").read_text())
    run = write_run(tmp_path / "runs" / "grpo_s0_seed0", [_row(0)], method="grpo", staleness=0)
    (run / "metrics.jsonl").write_text(json.dumps(_row(0)) + "\nnot json\n{}\n")
    at = _open_study(apptest, tmp_path)
    assert len(at.error) == 1 and "line 2" in at.error[0].value and "is not JSON" in at.error[0].value
    at.text_input(key="study_dir").input(str(tmp_path / "missing")).run()
    assert not at.exception and "does not exist" in at.error[0].value


def test_page2_runs_a_live_study_then_reuses_it(apptest, tmp_path, monkeypatch):
    monkeypatch.setenv("M2PO_LAB_RUNS_ROOT", str(tmp_path / "empty"))  # no study to open: the live source is shown
    at = open_page(apptest, PAGE2)
    at.multiselect(key="methods").set_value(["m2po"])
    at.multiselect(key="staleness").set_value([0])
    at.select_slider(key="updates").set_value(100).run()
    assert at.button(key="run_study").label == "Run the study"
    at.button(key="run_study").click().run()  # trains in a thread while the page polls (~10 s)
    assert not at.exception and not at.error, at.error
    assert len(at.get("vega_lite_chart")) == 4 and metric(at, "m2po clip/frac").endswith("%")
    at.run()
    assert at.button(key="run_study").label == "Cached: already trained" and at.button(key="run_study").disabled
    at.multiselect(key="staleness").set_value([]).run()  # an invalid config: StudyConfig's message
    assert not at.exception and "staleness must hold at least one value" in at.sidebar.error[0].value


# ---------------------------------------------------------------- page 3
def test_page3_overlays_study_runs(apptest, study_dir):
    at = _open_dir(apptest, study_dir)
    runs_key = _key(at, "multiselect", "runs@")
    assert at.multiselect(key=runs_key).value == ["grpo_s8_seed0", "m2po_s8_seed0"]  # methods at the top staleness
    metrics = at.multiselect(key="metrics").value
    assert metrics == ["reward", "eval/reward", "clip/frac", "is/m2"]
    assert not any("incomplete" in w.value for w in at.warning)  # a finished study's runs are finished
    assert len(at.get("vega_lite_chart")) == len(metrics) + 1  # one interactive chart per metric, the bands
    assert not at.get("image")
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert "tooltip" in json.dumps(spec) and "params" in json.dumps(spec)  # tooltips, legend toggle, zoom
    at.checkbox(key="interactive").uncheck().run()  # the static figures
    assert not at.exception and len(at.get("image")) == len(metrics) + 1 and not at.get("vega_lite_chart")
    table = at.table[0].value
    assert list(table.index) == at.multiselect(key=runs_key).value and list(table.columns) == metrics
    before = table.copy()
    at.slider(key="cursor").set_value(5).run()
    assert not at.exception and not at.table[0].value.equals(before)
    at.multiselect(key=runs_key).set_value(["m2po_s8_seed0"])
    at.multiselect(key="metrics").set_value(["m2po/candidate_frac"])
    at.multiselect(key="log_metrics").set_value(["m2po/candidate_frac"])
    at.slider(key="smooth").set_value(3).run()
    assert not at.exception and len(at.get("image")) == 2  # static (unchecked above): one metric, the bands
    assert any("logged by LLM runs only" in c.value for c in at.caption)


@pytest.mark.parametrize(
    "content, message",
    [
        (json.dumps(_row(0)) + "\n{oops\n" + json.dumps(_row(2)) + "\n", "line 2 of"),
        ("", "holds no complete line"),
        (json.dumps({"update": 0, "reward": 1.0}) + "\n", "lacks the required keys"),
        (None, "holds no metrics.jsonl"),
    ],
)
def test_page3_broken_run_shows_an_error(apptest, tmp_path, content, message):
    run = write_run(tmp_path / "run", [])
    if content is None:
        (run / "metrics.jsonl").unlink()
    else:
        (run / "metrics.jsonl").write_text(content)
    at = _open_dir(apptest, run)
    assert len(at.error) == 1 and message in at.error[0].value, [e.value for e in at.error]
    assert not at.get("image") and "Traceback" not in str(at)


def test_page3_one_broken_run_of_a_study(apptest, study_dir, tmp_path):
    folder = tmp_path / "runs"
    good = write_run(folder / "good", [])
    (good / "metrics.jsonl").write_text((study_dir / "runs" / "m2po_s8_seed0" / "metrics.jsonl").read_text())
    bad = write_run(folder / "bad", [])
    (bad / "metrics.jsonl").write_text("[]\n" + json.dumps(_row(1)) + "\n")
    at = _open_dir(apptest, folder)
    assert len(at.error) == 1 and "Cannot read run bad" in at.error[0].value
    assert len(at.get("vega_lite_chart")) >= 2  # the good run is still drawn: its metrics and bands


def test_page3_llm_run_shows_masked_tokens(apptest, tmp_path):
    tokens = [{"text": "What is 12 + 30? <answer>", "token": " 42", "log_ratio": 1.75},
              {"text": "a | b", "token": "*", "log_ratio": -0.5}]
    rows = [_row(0), _row(1, **{"tokens/zeroed": tokens}), _row(2), _row(3, **{"tokens/zeroed": tokens[1:]})]
    run = write_run(tmp_path / "llm_m2po", rows, kind="llm", method="m2po", staleness=4)
    at = _open_dir(apptest, run)
    html = [m.value for m in at.markdown if "<mark" in m.value]
    assert len(html) == 1 and "&lt;answer&gt;" not in html[0]  # at the last update: only the second token
    assert "<mark style='background:#ffd54f'>*</mark>" in html[0] and "-0.500" in html[0]
    at.slider(key="cursor").set_value(2).run()
    html = [m.value for m in at.markdown if "<mark" in m.value]
    assert "What is 12 + 30? &lt;answer&gt;<mark style='background:#ffd54f'> 42</mark>" in html[0]
    assert "+1.750" in html[0] and any("update **1**" in m.value for m in at.markdown)
    at.slider(key="cursor").set_value(0).run()
    assert any("no masked tokens logged at or before update 0" in i.value for i in at.info)


# ---------------------------------------------------------------- one selection state per page
def _headline_matches_slider(at, study_path):
    """Every headline number on page 2 is the summary's value at the staleness the slider shows."""
    summary = json.loads((study_path / "summary.json").read_text())
    k = at.select_slider(key=_key(at, "select_slider", "staleness_shown@")).value
    steady = {(r["method"], r["staleness"]): r["clip_frac_steady"] for r in summary["runs"]}
    for m in ("grpo", "m2po"):
        assert metric(at, f"{m} clip/frac") == f"{100 * steady[m, k]:.3f}%", (m, k)
    return k


def test_page2_headline_follows_the_controls_for_every_way_of_opening(apptest, study_dir, tmp_path, monkeypatch):
    import shutil

    found = tmp_path / "runs" / "study"  # where the page finds a study by itself
    typed = tmp_path / "elsewhere" / "study"
    shutil.copytree(study_dir, found)
    shutil.copytree(study_dir, typed)
    monkeypatch.setenv("M2PO_LAB_RUNS_ROOT", str(tmp_path))
    at = open_page(apptest, PAGE2)  # found below the root: opened by default
    assert at.radio(key="study_source").value == "Open a study directory"
    assert _headline_matches_slider(at, found) == 8
    at.select_slider(key=_key(at, "select_slider", "staleness_shown@")).set_value(0).run()
    assert _headline_matches_slider(at, found) == 0
    at.text_input(key="study_dir").input(str(typed)).run()  # typed: another directory, its own state
    assert not at.exception and _headline_matches_slider(at, typed) == 8
    at.select_slider(key=_key(at, "select_slider", "staleness_shown@")).set_value(0).run()
    assert _headline_matches_slider(at, typed) == 0
    at.text_input(key="study_dir").input("").run()  # back to the found one (Streamlit forgets unshown widgets)
    assert not at.exception and _headline_matches_slider(at, found) in (0, 8)
    at = apptest.from_file(str(HOME), default_timeout=90)
    at.query_params["dir"] = str(typed)
    at.run()
    at.switch_page(PAGE2).run()  # through ?dir=
    assert not at.exception and _headline_matches_slider(at, typed) == 8


def test_a_path_outside_the_runs_root_is_refused(apptest, tmp_path, monkeypatch, study_dir):
    monkeypatch.setenv("M2PO_LAB_RUNS_ROOT", str(tmp_path))
    for page, key in ((PAGE2, "study_dir"), (PAGE3, "run_dir")):
        at = open_page(apptest, page)
        if page == PAGE2:
            at.radio(key="study_source").set_value("Open a study directory").run()
        at.text_input(key=key).input("/etc").run()
        assert not at.exception and any("outside the runs root" in e.value for e in at.error)
        at.text_input(key=key).input(str(study_dir)).run()
        assert not at.exception and any("outside the runs root" in e.value for e in at.error)


def test_page3_prefers_runs_study_and_waits_for_a_run_still_in_its_warm_start(apptest, study_dir, tmp_path,
                                                                               monkeypatch):
    """Runs root = runs/ itself (``m2po-lab app --runs-root runs``): runs/study opens by default though a newer
    LLM run exists; that run, locked and without metrics.jsonl (its SFT phase), gets a note, not an error."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(study_dir, root / "study")
    sft = root / "tiny"
    sft.mkdir()
    (sft / "config.json").write_text(json.dumps({"format": rd.FORMAT, "kind": "llm",
                                                 "config": {"method": "m2po", "staleness": 16}}))
    monkeypatch.setenv("M2PO_LAB_RUNS_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    with rd.DirLock(sft):
        at = open_page(apptest, PAGE3)
        found = _key(at, "selectbox", "run_found")
        assert at.selectbox(key=found).value.startswith("study (study")  # not the newest entry, tiny
        assert at.selectbox(key=found).options[0].startswith("tiny (LLM run")  # newest first
        at.selectbox(key=found).set_value(at.selectbox(key=found).options[0]).run()
        assert not at.exception and not at.error, at.error
        assert any("has not logged an update yet" in i.value for i in at.info)
