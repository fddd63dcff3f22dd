"""Every dashboard page through Streamlit's AppTest: real tiny runs, bad values, cancel, no exceptions."""
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from sdcore.config import preset
from sdcore.runs import RunStore
from sdcore.training import train

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
PAGES = ("train", "sweeps", "live", "compare", "students", "byot", "calibration", "robustness", "hessian",
         "landscape", "papers", "runs")
TINY = {"epochs": 2, "data.subset": 300, "model.width": 0.5}


def app(runs_dir) -> AppTest:
    return AppTest.from_file(APP, default_timeout=120)


def page(at: AppTest, name: str) -> AppTest:
    return at.switch_page(f"../pages/{name}.py").run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def wait_status(runs_dir, run_id, statuses, timeout=120.0) -> str:
    run = RunStore(runs_dir).get(run_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run.status()
        if status in statuses:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{run_id} stayed {run.status()}")


@pytest.fixture(autouse=True)
def pages_never_compute(monkeypatch):
    """Every registered analysis, and the curvature and loss-surface stages, compute in a JobManager worker
    thread, and the Train page's training-step timing in its own background thread: never in a page's script
    thread."""
    import dataclasses
    import threading

    from app.ui import state
    from sdcore.analysis import registry, runner

    def guarded(compute, thread="sdlab-worker"):
        def run(*args, **kwargs):
            where = threading.current_thread().name
            assert where.startswith(thread), f"computed in {where}, not in a background job"
            return compute(*args, **kwargs)
        return run

    for name in registry.kinds():
        entry = registry.get(name)
        monkeypatch.setitem(registry._KINDS, name, dataclasses.replace(entry, compute=guarded(entry.compute)))
    monkeypatch.setattr(runner, "_compute", guarded(runner._compute))
    monkeypatch.setattr(state, "estimate_run", guarded(state.estimate_run, "sdlab-estimate"))


def settle(at: AppTest, timeout: float = 300.0) -> AppTest:
    """Wait for the analysis jobs the page queued, then run it again, until it shows no job of its own: AppTest
    does not fire ``st.fragment(run_every=…)``, so the page's own rerun when its jobs end never comes. (A job
    may end before this looks: the page drawn while it ran still says "Computing … in the background".)"""
    from app import ui

    deadline = time.monotonic() + timeout
    while True:
        jobs = [h for h in ui.manager().jobs() if not h.done]
        for h in jobs:
            assert h.wait(max(0.1, deadline - time.monotonic())), f"analysis of {h.run_id} still running"
        if not jobs and not any(i.value.startswith("Computing ") for i in at.info):
            return at
        assert time.monotonic() < deadline, "the page still shows its background analyses"
        at.run()


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """A finished demo-shaped KD run (2 students) and a BYOT run on the same data, trained once."""
    root = tmp_path_factory.mktemp("runs")
    train(preset("demo").replace(**TINY), runs_dir=root)
    train(preset("demo-byot").replace(**TINY), runs_dir=root)
    return root


@pytest.fixture
def runs_copy(finished_runs, tmp_path, monkeypatch):
    """A private, writable copy of the finished runs (tests that rename, damage or analyse them)."""
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(finished_runs, root)
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(root))
    return root


def compute_and_wait(at: AppTest, timeout: float = 180.0) -> AppTest:
    """Click Compute on an analysis page, then rerun until its charts (or an error) show."""
    next(b for b in at.button if b.label == "Compute").click().run()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not at.get("plotly_chart") and not at.error:
        time.sleep(0.5)
        at.run()  # fragments do not auto-refresh under AppTest
        if any(b.label == "Compute" for b in at.button):  # done, and the page asks for the next batch (a baseline)
            break
    no_exception(at)
    return at


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_without_runs(runs_dir, name):
    at = page(app(runs_dir).run(), name)
    no_exception(at)
    assert at.title


def test_the_demo_estimate_is_timed_in_the_background_and_shown_once_measured(runs_dir):
    from app.ui import state

    state._estimate_future.clear()  # a fresh measurement (another test may have left one)
    at = page(app(runs_dir).run(), "train")
    no_exception(at)
    captions = [c.value for c in at.caption]
    waiting = any(c.startswith("Timing a training step") for c in captions)
    assert waiting or any(c.startswith("Training takes at least") for c in captions), captions
    future = state._estimate_future(preset("demo").to_json())
    assert future.result(timeout=120) is not None
    at.run()
    shown = [c.value for c in at.caption if c.value.startswith("Training takes at least")]
    est = future.result()
    assert len(shown) == 1 and f"{est.seconds:.0f} s" in shown[0] and f"× {est.steps} steps" in shown[0]


CHARTED = ("live", "compare", "students", "byot", "calibration", "robustness")  # pages that chart any finished run


def renders(runs_dir, name: str) -> None:
    """Page ``name`` over the runs in ``runs_dir`` (SDLAB_RUNS_DIR set by the caller): no exception, no error, its
    charts drawn, once its background analyses are done."""
    at = settle(page(app(runs_dir).run(), name))
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    if name in CHARTED:
        assert at.get("plotly_chart"), f"{name} shows no chart"


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_with_finished_runs(finished_runs, monkeypatch, name):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(finished_runs))
    renders(finished_runs, name)


def test_train_form_launches_a_real_run_from_the_widgets(runs_dir):
    at = app(runs_dir).run()
    at.number_input(key="cfg.epochs").set_value(2)
    at.number_input(key="cfg.data.subset").set_value(300)
    at.number_input(key="cfg.rounds").set_value(1)
    at.slider(key="cfg.alpha").set_value(0.5)
    assert at.number_input(key="cfg.optim.sam_rho").value is None  # SAM off unless asked for
    at.number_input(key="cfg.optim.sam_rho").set_value(0.05)
    at.run()
    assert "0.50" in at.latex[0].value  # the formula follows alpha
    launch = next(b for b in at.button if b.label == "Launch")
    launch.click().run()
    no_exception(at)
    (run,) = list(RunStore(runs_dir))
    assert wait_status(runs_dir, run.id, ("done",)) == "done"
    cfg = run.config()
    assert (cfg.epochs, cfg.data.subset, cfg.rounds, cfg.alpha, cfg.optim.sam_rho) == (2, 300, 1, 0.5, 0.05)
    assert run.finished_rounds() == [0, 1]


def test_train_page_sharpness_checkbox_logs_sharpness_every_epoch(runs_dir):
    at = app(runs_dir).run()
    box = at.checkbox(key="cfg.track_sharpness")
    assert box.value is False and "Lanczos steps" in box.help and "2.1×" in box.help  # off by default, cost stated
    at.number_input(key="cfg.epochs").set_value(2)
    at.number_input(key="cfg.data.subset").set_value(300)
    at.number_input(key="cfg.rounds").set_value(0)
    box.check()
    at.run()
    next(b for b in at.button if b.label == "Launch").click().run()
    no_exception(at)
    (run,) = list(RunStore(runs_dir))
    assert wait_status(runs_dir, run.id, ("done",)) == "done"
    assert run.config().track_sharpness is True
    assert [m["sharpness"] > 0 for m in run.metrics()] == [True, True]


def choose(at: AppTest, kind: str, *ticked: str) -> AppTest:
    """Pick the Train page's kind of training ("kd", "dml", "one network") and, for one network, tick these terms."""
    next(w for w in at.main if getattr(w, "key", None) == "terms.kind").set_value(kind).run()
    for t in ticked:
        at.checkbox(key=f"terms.{t}").check().run()
    return at


def test_choosing_byot_sets_exits_and_single_round(runs_dir):
    at = choose(app(runs_dir).run(), "one network", "byot")
    no_exception(at)
    assert not at.error
    assert at.toggle(key="cfg.model.exits").value is True and at.session_state["cfg.rounds"] == 0
    assert "p_C" in at.latex[0].value  # the BYOT loss is shown


def test_choosing_dml_trains_two_peers_and_live_shows_them(runs_dir):
    at = choose(app(runs_dir).run(), "dml")
    no_exception(at)
    assert not at.error
    assert at.number_input(key="cfg.model.peers").value == 2 and at.session_state["cfg.rounds"] == 0
    assert r"\sum_{j \ne i}" in at.latex[0].value  # the DML loss is shown
    at.number_input(key="cfg.epochs").set_value(2)
    at.number_input(key="cfg.data.subset").set_value(300).run()
    next(b for b in at.button if b.label == "Launch").click().run()
    (run,) = list(RunStore(runs_dir))
    assert wait_status(runs_dir, run.id, ("done",)) == "done"
    assert run.config().model.peers == 2 and len(run.summary().rounds[0].peer_accs) == 2
    at = page(app(runs_dir).run(), "live")
    no_exception(at)
    assert at.get("plotly_chart")


@pytest.mark.parametrize("changes,words", [
    ({"cfg.data.val_fraction": 0.0, "cfg.select": "best_val"}, "select"),
    ({"cfg.data.name": "cifar10", "cfg.data.root": "/nonexistent/data"}, "/nonexistent/data"),
    ({"cfg.optim.step_milestones": "half"}, "optim.step_milestones"),
    ({"cfg.model.skip": False}, "model.skip"),
    # typed out of range: the widgets take any number, validation names the field and its range
    ({"cfg.optim.batch_size": 70000}, "optim.batch_size must be an integer in [1, 65536], got 70000"),
    ({"cfg.epochs": 0}, "epochs must be an integer in [1, 10000], got 0"),
    ({"cfg.rounds": 21}, "rounds must be an integer in [0, 20], got 21"),
    ({"cfg.model.width": 9.0}, "model.width must be in [0.125, 8], got 9.0"),
    ({"cfg.optim.lr": 0.0}, "optim.lr must be in (0, 10], got 0.0"),
    ({"cfg.data.subset": 5000}, "data.subset=5000 exceeds the 1294 training examples"),
])
def test_bad_values_show_an_error_and_block_launch(runs_dir, changes, words):
    at = app(runs_dir).run()
    for key, value in changes.items():
        widget = next(w for w in at.main if getattr(w, "key", None) == key)
        widget.set_value(value)
    at.run()
    no_exception(at)
    assert any(words in e.value for e in at.error), [e.value for e in at.error]
    assert next(b for b in at.button if b.label == "Launch").disabled
    assert not list(RunStore(runs_dir))  # nothing was written


def test_train_page_terms_set_the_method_the_exits_and_the_formula(runs_dir):
    """One network with PS-KD + BYOT + DMFL: cfg.method, exits and rounds follow the registry, each term's
    fields show, and the formula is terms.formula of the config; unticking all is the labels-only baseline."""
    from sdcore import terms

    at = app(runs_dir).run()
    assert at.number_input(key="cfg.rounds").value == 2  # the demo: multi-round KD has students
    assert not any(c.key == "terms.byot" for c in at.checkbox)  # no term can join multi-round KD
    choose(at, "one network", "pskd", "byot", "dmfl")
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["cfg.method"] == "pskd+byot+dmfl"
    assert at.toggle(key="cfg.model.exits").value is True
    assert not any(w.key == "cfg.rounds" for w in at.number_input)  # Students: multi-round only
    for key in ("cfg.hint_weight", "cfg.pskd_alpha", "cfg.dmfl_weight", "cfg.dmfl_temperature"):
        assert at.number_input(key=key)
    assert at.selectbox(key="cfg.byot_style").options == [s.label for s in terms.BYOT_STYLES.values()]
    at.selectbox(key="cfg.byot_style").set_value("luan")
    at.number_input(key="cfg.dmfl_weight").set_value(0.5).run()
    latex = at.latex[0].value
    assert r"\tilde y" in latex and "q_i" in latex and "0.5" in latex and r"\sum_{F_i>0" in latex  # luan's hint
    assert "PS-KD + BYOT + DMFL" in " ".join(c.value for c in at.caption)
    for t in ("pskd", "byot", "dmfl"):
        at.checkbox(key=f"terms.{t}").uncheck().run()
    assert at.session_state["cfg.method"] == "ce" and at.toggle(key="cfg.model.exits").value is False
    assert at.latex[0].value == "$$\n" + terms.formula(preset("demo-baseline").replace(alpha=0.2, temperature=4.0)) \
        + "\n$$"
    choose(at, "one network", "dmfl")  # DMFL alone needs the exits too
    assert at.session_state["cfg.method"] == "dmfl" and at.toggle(key="cfg.model.exits").value is True
    assert at.number_input(key="cfg.dmfl_weight").value == 0.5  # kept while it was hidden
    choose(at, "kd")
    assert at.number_input(key="cfg.rounds").value == 2 and at.toggle(key="cfg.model.exits").value is False
    assert not at.error


@pytest.mark.slow
def test_train_page_launches_every_preset_exactly(runs_dir, monkeypatch):
    """Loading a preset fills the form so that Launch submits exactly preset(name) (data checks off: the
    paper presets' datasets are not here)."""
    from sdcore.config import PRESETS
    from sdcore.jobs import JobManager
    from sdcore.runs import RunError

    launched = []

    def capture(self, cfg, **_):
        launched.append(cfg)
        raise RunError("captured by the test")

    monkeypatch.setattr("sdcore.data.check_available", lambda data: None)
    monkeypatch.setattr(JobManager, "submit", capture)
    at = app(runs_dir).run()
    for name in PRESETS:
        at.selectbox(key="preset").set_value(name).run()
        next(b for b in at.button if b.label == "Launch").click().run()
        no_exception(at)
        assert launched[-1] == preset(name), name
    assert len(launched) == len(PRESETS)
    assert at.session_state["terms.kind"] == "one network"  # the last preset, e.g. a seed-003 row, is one network


def test_train_page_pskd_with_sam_is_one_line_in_the_optimizer_box(runs_dir):
    at = choose(app(runs_dir).run(), "one network", "pskd")
    at.number_input(key="cfg.optim.sam_rho").set_value(0.05).run()
    no_exception(at)
    assert len(at.error) == 1 and "optim.sam_rho" in at.error[0].value and "\n" not in at.error[0].value
    assert next(b for b in at.button if b.label == "Launch").disabled
    assert any("Optimizer and schedule" in c.value for c in at.caption)  # where to find it: a folded expander


def test_run_the_demo_then_cancel_from_live(runs_dir):
    at = app(runs_dir).run()
    assert at.button[0].label == "Run the demo"  # first-time visitor
    at.button[0].click().run()
    no_exception(at)
    assert at.title[0].value == "Live training"
    (run,) = list(RunStore(runs_dir))
    wait_status(runs_dir, run.id, ("running",))
    at.run()  # fragments do not auto-refresh under AppTest: rerun by hand
    cancel = next(b for b in at.button if b.label == "Cancel")
    cancel.click().run()
    assert wait_status(runs_dir, run.id, ("cancelled",), timeout=10) == "cancelled"
    at.run()
    no_exception(at)
    assert any("cancelled" in w.value for w in at.warning)


def test_batch_larger_than_the_split_warns_what_happens_and_still_launches(runs_dir):
    at = app(runs_dir).run()
    at.number_input(key="cfg.optim.batch_size").set_value(65536).run()
    no_exception(at)
    assert not at.error
    assert any("single step on all 1294 at once" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not next(b for b in at.button if b.label == "Launch").disabled


def progress_text(at: AppTest) -> str:
    (bar,) = at.main.get("progress")  # Live's (the sidebar has one per job too)
    return bar.proto.text


def test_live_counts_from_the_first_frame_then_cancel_and_resume(runs_dir):
    """Live shows the demo's real rounds, epochs and steps from its first frame; after Cancel it offers Resume,
    which continues the run and follows it again."""
    at = app(runs_dir).run()
    at.button[0].click().run()  # Run the demo
    (run,) = list(RunStore(runs_dir))
    cfg = run.config()
    counts = rf"round \d of {cfg.rounds} \((teacher|student \d)\) · epoch \d+/{cfg.epochs} · step \d+/21"  # 1294 / 64
    assert re.search(counts, progress_text(at)), progress_text(at)
    wait_status(runs_dir, run.id, ("running",))
    at.run()  # fragments do not auto-refresh under AppTest: rerun by hand
    assert re.search(counts, progress_text(at)), progress_text(at)
    next(b for b in at.button if b.label == "Cancel").click().run()
    wait_status(runs_dir, run.id, ("cancelled",), timeout=10)
    at.run()
    assert not any(b.label == "Cancel" for b in at.button)
    next(b for b in at.button if b.label == "Resume").click().run()
    no_exception(at)
    assert at.title[0].value == "Live training" and at.session_state["live_run"] == run.id
    assert run.status() in ("queued", "running")
    assert re.search(counts, progress_text(at)), progress_text(at)
    next(b for b in at.button if b.label == "Cancel").click().run()  # leave no job running
    assert wait_status(runs_dir, run.id, ("cancelled",), timeout=10) == "cancelled"


def test_a_recommended_preset_trains_from_its_button(runs_copy):
    """The analysis pages recommend a SAM baseline (`demo-sam`): its button trains that preset as it is and
    opens Live on it."""
    at = page(app(runs_copy).run(), "hessian")
    button = next(b for b in at.button if b.label == "Train demo-sam")
    button.click().run()
    no_exception(at)
    assert at.title[0].value == "Live training"
    run = RunStore(runs_copy).get(at.session_state["live_run"])
    assert run.config() == preset("demo-sam")
    next(b for b in at.button if b.label == "Cancel").click()  # leave no job running
    at.switch_page("../pages/live.py").run()  # AppTest reruns the page it last switched to, not st.switch_page's
    assert wait_status(runs_copy, run.id, ("cancelled",), timeout=60) == "cancelled"  # it may be loading its data


def test_runs_page_renames_and_deletes_with_confirmation(runs_copy):
    root = runs_copy
    at = page(app(root).run(), "runs")
    first = at.selectbox(key="runs_selected").value
    at.text_input[0].input("renamed by test")
    next(b for b in at.button if b.label == "Rename").click().run()
    no_exception(at)
    assert any(p.name.endswith("renamed-by-test") for p in root.iterdir())
    delete = next(b for b in at.button if b.label == "Delete")
    assert delete.disabled  # needs the confirmation first
    at.checkbox[0].check().run()
    next(b for b in at.button if b.label == "Delete").click().run()
    no_exception(at)
    assert len(list(root.iterdir())) == 1 and first not in [p.name for p in root.iterdir()]


def test_live_shows_a_damaged_run_without_crashing(runs_copy):
    root = runs_copy
    victim = sorted(root.iterdir())[-1]
    text = (victim / "metrics.jsonl").read_text()
    (victim / "metrics.jsonl").write_text(text[:-9])  # a truncated last line
    at = app(root).run()
    at.session_state["live_run"] = victim.name
    at = page(at, "live")
    no_exception(at)
    assert any("cannot be read" in e.value for e in at.error)
    for name in ("compare", "byot", "runs"):
        no_exception(page(at, name))


@pytest.mark.slow
def test_hessian_page_computes_in_the_background_and_shows_results(runs_copy):
    root = runs_copy
    at = page(app(root).run(), "hessian")
    no_exception(at)
    at.number_input[0].set_value(3)  # top eigenvalues
    at.number_input[1].set_value(64)  # training examples
    at.run()
    assert any("not computed yet" in i.value for i in at.info)
    compute_and_wait(at)
    assert len(at.get("plotly_chart")) == 3  # bars, density, ECDF
    assert "teacher (round 0)" in at.dataframe[0].value["model"].tolist()
    advised = any("and so does the `demo` preset" in m.value for m in at.markdown)  # when no student is flatter
    assert advised == any(b.label == "Train demo" for b in at.button)
    assert list((next(p for p in root.iterdir() if "demo-byot" not in p.name) / "analysis").glob("eigen-0-*.json"))


def test_landscape_page_computes_in_the_background_and_shows_results(runs_copy):
    root = runs_copy
    at = page(app(root).run(), "landscape")
    no_exception(at)
    at.number_input[0].set_value(5).run()  # a 5×5 grid keeps the test fast
    compute_and_wait(at)
    # 2D contours, one 3D surface per round (3), the teacher→student line, the noise curves
    assert len(at.get("plotly_chart")) == 1 + 3 + 1 + 1, [e.value for e in at.error]


def test_calibration_page_shows_rounds_and_exits(finished_runs, monkeypatch):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(finished_runs))
    at = page(app(finished_runs).run(), "calibration")
    seen = {}
    for run_id in sorted(p.name for p in finished_runs.iterdir() if (p / "config.json").exists()):
        settle(at.selectbox(key="calibration_run").set_value(run_id).run())
        no_exception(at)
        assert not at.error, [e.value for e in at.error]
        table = at.dataframe[0].value
        seen["byot" if "byot" in run_id else "kd"] = table["model"].tolist()
        assert ((table["ECE (%)"] >= 0) & (table["ECE (%)"] <= 100)).all()
        assert (table["top-5 error (%)"] <= table["top-1 error (%)"]).all()
        assert len(at.get("plotly_chart")) == 1
        assert any("This run:" in e.value for e in at.markdown)
    assert seen["kd"] == ["teacher (round 0)", "student 1", "student 2"]
    assert seen["byot"] == ["exit 1", "exit 2", "exit 3 (deepest)", "ensemble of exits"]  # the demo CNN: 3 sections
    # The answer is cached in each run's folder.
    assert len(list(finished_runs.glob("*/analysis/calibration-*.json"))) == 2
    # PS-KD's convention by default; Guo's 15 bins one pick away, and the caption says which is shown.
    captions = lambda: " ".join(c.value for c in at.caption)  # noqa: E731
    assert at.selectbox(key="calibration_convention").value == "pskd" and "'pskd' convention" in captions()
    settle(at.selectbox(key="calibration_convention").set_value("guo").run())
    no_exception(at)
    assert not at.error and "15 equal-width bins" in captions() and "'guo' convention" in captions()


def test_students_page_shows_distances_deltas_and_the_gallery(finished_runs, monkeypatch):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(finished_runs))
    at = settle(page(app(finished_runs).run(), "students"))
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert table["model"].tolist() == ["student 1", "student 2"]
    assert table["its teacher"].tolist() == ["teacher (round 0)", "student 1"]
    assert len(at.get("plotly_chart")) == 2
    fixed, broken = (table["fixed (right now, teacher wrong)"].tolist(),
                     table["broken (wrong now, teacher right)"].tolist())
    images = at.get("image")
    assert len(images) == min(fixed[0], 24) + min(broken[0], 24)
    at.segmented_control(key="students_gallery_round").set_value(2).run()
    no_exception(at)
    assert len(at.get("image")) == min(fixed[1], 24) + min(broken[1], 24)
    assert any("This run:" in m.value for m in at.markdown)


def test_robustness_page_curves_scatter_and_alpha_tradeoff(runs_copy):
    """Two finished KD runs that differ only in α give the trade-off plot; every round is in the table."""
    from sdcore.config import preset
    from sdcore.training import train

    root = runs_copy
    train(preset("demo").replace(**TINY, alpha=0.8), runs_dir=root)
    at = settle(page(app(root).run(), "robustness"))
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert len(table) == 3 + 1 + 3  # demo (3 rounds) + BYOT (1) + the α=0.8 demo (3)
    assert ((table["mean corrupted"] >= 0) & (table["mean corrupted"] <= 100)).all()
    assert len(at.get("plotly_chart")) == 3  # curves, ID vs OOD, α trade-off
    assert any("runs per α" in c.value for c in at.caption)


@pytest.mark.slow
def test_hessian_page_draws_a_sam_baseline_next_to_the_rounds(runs_copy):
    root = runs_copy
    sam, _ = train(preset("demo-sam").replace(**TINY), runs_dir=root)
    demo = next(p.name for p in root.iterdir() if p.name.endswith("-demo"))
    at = page(app(root).run(), "hessian")
    at.selectbox(key="hessian_run").set_value(demo).run()  # the newest run (the SAM one) is the default
    at.number_input[0].set_value(2)  # top eigenvalues
    at.number_input[1].set_value(64)  # training examples
    at.multiselect(key="hessian_baselines").select(sam.id).run()
    compute_and_wait(at)  # the run's rounds, then the page asks for the baseline's teacher
    assert not at.get("plotly_chart")
    compute_and_wait(at)
    models = at.dataframe[0].value["model"].tolist()
    assert models[:3] == ["teacher (round 0)", "student 1", "student 2"]
    assert models[3] == f"SAM ρ=0.05 · {sam.id[:15]}"
    assert at.dataframe[0].value["test accuracy (%)"].iloc[3] == sam.summary().rounds[0].test_acc
    assert list((sam.path / "analysis").glob("eigen-0-*.json"))


def test_compare_page_ban_vs_independent_ensemble(runs_copy):
    root = runs_copy
    train(preset("demo").replace(**TINY, seed=1), runs_dir=root)  # a second seed of the same config
    at = settle(page(app(root).run(), "compare"))
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    ens = next(d.value for d in at.dataframe if "models (m)" in d.value.columns)
    assert ens["models (m)"].tolist() == [1, 2, 3]
    assert (ens["m independent teachers (%)"] != "–").tolist() == [True, True, False]  # two seeds
    assert "±" in ens["BAN of rounds 0..m−1 (%)"].iloc[1]  # mean ± std over the two seeds
    assert at.get("plotly_chart") and any(c.key == "compare-ensembles" for c in at.get("plotly_chart"))


def test_byot_page_shows_exit_features(finished_runs, monkeypatch):
    monkeypatch.setenv("SDLAB_RUNS_DIR", str(finished_runs))
    at = settle(page(app(finished_runs).run(), "byot"))
    no_exception(at)
    sep = next(d.value for d in at.dataframe if "SSE/SSB" in d.value.columns)
    assert sep["classifier"].tolist() == ["exit 1", "exit 2", "exit 3 (deepest)"]
    assert (sep["SSE/SSB"] > 0).all()
    assert any(c.key == "byot-pca" for c in at.get("plotly_chart"))
    assert any(c.key == "byot-grads" for c in at.get("plotly_chart"))  # vs the demo run trained alone


def test_paper_tables_put_a_run_of_the_preset_beside_the_paper(runs_copy):
    root = runs_copy
    quick = preset("pham-cifar10-resnet18-a0.2").replace(  # the preset's name, but digits and a tiny CNN
        rounds=1, epochs=2, **{"data.name": "digits", "data.subset": 300, "data.augment": False, "model.arch": "cnn",
                               "model.width": 0.5, "optim.batch_size": 64})
    run, _ = train(quick, runs_dir=root)
    at = page(app(root).run(), "papers")
    settle(at.selectbox(key="paper_preset").set_value("pham-cifar10-resnet18-a0.2").run())
    no_exception(at)
    table = at.dataframe[0].value
    assert table["source"].tolist() == ["paper", run.id]
    assert table["teacher"].iloc[0] == "95.57 ± 0.15" and pd.isna(table["student 3"].iloc[1])
    assert float(table["student 1"].iloc[1]) == pytest.approx(run.summary().rounds[1].test_acc, abs=0.01)
    assert "differs in" in table["preset settings"].iloc[1] and "data.name" in table["preset settings"].iloc[1]
    at.selectbox(key="paper_preset").set_value("pham-svhn-resnet18").run()
    assert at.dataframe[0].value["source"].tolist() == ["paper"]
    assert any("No run of `pham-svhn-resnet18` yet" in i.value for i in at.info)


def test_compare_page_plots_student_accuracy_against_the_number_of_teachers(runs_copy):
    root = runs_copy
    train(preset("demo").replace(**TINY, **{"model.teachers": 2}), runs_dir=root)
    at = settle(page(app(root).run(), "compare"))
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert any(c.key == "compare-teachers" for c in at.get("plotly_chart"))
    at = page(app(root).run(), "train")
    assert at.number_input(key="cfg.model.teachers").value == 1


@pytest.mark.parametrize("newer", ["demo-dml", "demo-sam"])
def test_byot_baseline_is_a_single_kd_teacher_trained_the_same_way(newer, runs_copy):
    """A newer run on the same data and backbone must not pass for 'the same backbone trained alone' when it is a
    DML cohort (not one network) or trained with SAM (another optimizer)."""
    root = runs_copy
    train(preset(newer).replace(**TINY), runs_dir=root)
    at = page(app(root).run(), "byot")
    no_exception(at)
    caption = next(c.value for c in at.caption if "Dashed line" in c.value)
    assert re.search(r"run `\d{8}-\d{6}-demo`", caption), caption  # the demo's teacher, not the newer run


def test_train_page_augmentation_policy_follows_the_toggle(runs_dir):
    at = app(runs_dir).run()
    assert at.selectbox(key="cfg.data.augment_policy").disabled  # the demo does not augment
    at.toggle(key="cfg.data.augment").set_value(True).run()
    at.selectbox(key="cfg.data.augment_policy").set_value("autoaugment").run()
    no_exception(at)
    assert not at.error
    at.toggle(key="cfg.data.augment").set_value(False).run()
    assert at.selectbox(key="cfg.data.augment_policy").value == "crop_flip" and not at.error


def test_sweeps_page_bad_grid_blocks_launch(runs_dir):
    at = page(app(runs_dir).run(), "sweeps")
    at.text_area(key="sweep.grid").set_value("alpha=0.2,1.5").run()
    no_exception(at)
    assert any("alpha must be" in e.value for e in at.error)
    assert next(b for b in at.button if b.label.startswith("Launch sweep")).disabled


def test_sweeps_page_says_how_to_get_sweeps_without_ray(runs_dir, monkeypatch):
    from sdcore import sweep as sw

    monkeypatch.setattr(sw, "ray_available", lambda: False)
    monkeypatch.setattr("sdcore.slurm.submitit_available", lambda: False)
    at = page(app(runs_dir).run(), "sweeps")
    no_exception(at)
    assert any("requirements-sweep.txt" in m.value for m in at.markdown)
    assert not any(b.label.startswith("Launch sweep") for b in at.button)


def test_sweeps_page_submits_to_slurm_and_follows_the_jobs(runs_dir, tmp_path, monkeypatch):
    """The SLURM choice through submitit's real SlurmExecutor, with stand-ins for sbatch/srun/scancel on PATH."""
    from sdcore import sweep as sw

    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/sbatch.sh\necho Submitted batch job 77\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/scancel.txt\n")
    for tool in ("sbatch", "srun", "scancel"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    at = page(app(runs_dir).run(), "sweeps")
    at.selectbox(key="sweep.base").set_value("demo").run()
    at.text_area(key="sweep.grid").set_value("seed=0,1").run()
    at.radio(key="sweep.backend").set_value("SLURM (submitit)").run()
    at.text_input(key="sweep.time").set_value("soon").run()
    assert any("--time 'soon' must be minutes" in e.value for e in at.error)
    assert next(b for b in at.button if b.label.startswith("Launch sweep")).disabled
    at.text_input(key="sweep.time").set_value("2:00:00").run()
    at.text_input(key="sweep.partition").set_value("gpu").run()
    next(b for b in at.button if b.label.startswith("Launch sweep")).click().run()
    no_exception(at)
    assert not at.error
    sbatch = (tmp_path / "sbatch.sh").read_text().splitlines()
    assert "#SBATCH --array=0-1%2" in sbatch and "#SBATCH --partition=gpu" in sbatch and "#SBATCH --time=120" in sbatch
    (sweep,) = sw.list_sweeps(RunStore(runs_dir))
    assert any("**running on SLURM**" in m.value for m in at.markdown)
    table = at.dataframe[-1].value
    assert list(table["status"]) == ["queued (job 77_0)", "queued (job 77_1)"]
    next(b for b in at.button if b.label == "Stop the sweep").click().run()
    no_exception(at)
    assert (tmp_path / "scancel.txt").read_text().split() == ["77_0", "77_1"]


@pytest.mark.slow
@pytest.mark.skipif(not __import__("sdcore.sweep").sweep.ray_available(), reason="sweeps need Ray")
def test_train_page_launches_stops_and_continues_a_sweep(runs_dir):
    from sdcore import sweep as sw

    at = app(runs_dir).run()
    at.number_input(key="cfg.epochs").set_value(12)
    at.number_input(key="cfg.data.subset").set_value(300)
    at.number_input(key="cfg.rounds").set_value(0).run()
    at = page(at, "sweeps")  # its Config defaults to the Train page's form
    assert at.selectbox(key="sweep.base").value == "train"
    at.text_area(key="sweep.grid").set_value("seed=0,1").run()
    launch = next(b for b in at.button if b.label.startswith("Launch sweep"))
    assert launch.label == "Launch sweep (2 trials)"
    launch.click().run()
    no_exception(at)
    store = RunStore(runs_dir)
    (sweep,) = sw.list_sweeps(store)

    def until(ok, what, timeout=120.0):
        deadline = time.monotonic() + timeout
        while not ok():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    until(lambda: any(s.state == "running" and s.fraction > 0 for s in sw.trial_states(store, sweep)), "a trial")
    at.run()  # fragments do not auto-refresh under AppTest
    assert any("**running**" in m.value for m in at.markdown)
    assert any(f"sweep `{sweep.id}`" in p.proto.text for p in at.sidebar.get("progress"))  # the Jobs list
    next(b for b in at.button if b.label == "Stop the sweep").click().run()
    until(lambda: not sweep.is_live(), "the driver to stop")
    states = sw.trial_states(store, sweep)
    assert {s.state for s in states} <= {"cancelled", "interrupted", "pending", "done"}
    assert any(s.state != "done" for s in states)
    at.run()
    next(b for b in at.button if b.label == "Continue the sweep").click().run()
    no_exception(at)
    until(lambda: all(s.state == "done" for s in sw.trial_states(store, sweep)), "the sweep to finish", 180)
    until(lambda: not sweep.is_live(), "the driver to exit")
    at.run()
    no_exception(at)
    table = at.dataframe[-1].value
    assert list(table["status"]) == ["done", "done"] and list(table["overrides"]) == ["seed=0", "seed=1"]
    assert len(list(store)) == 2  # the stopped trials continued in their own run folders
    assert not any(b.label == "Continue the sweep" for b in at.button)
    at = page(at, "compare")  # the trials differ only by seed: Compare pools them into one mean ± std row
    no_exception(at)
    pooled = at.dataframe[0].value
    assert list(pooled["seeds"]) == [2] and "±" in pooled.iloc[0, 2], pooled  # the teacher: mean ± std


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """Two rows of seed paper 003's grid (labels only; PS-KD + BYOT + DMFL), two seeds each, trained once."""
    root = tmp_path_factory.mktemp("grid")
    for seed in (0, 1):
        for name in ("demo-baseline", "demo-pskd-byot-dmfl"):
            train(preset(name).replace(**TINY, seed=seed), runs_dir=root)
    return root


def test_compare_page_terms_grid_beside_seed_paper_003(grid_runs, monkeypatch):
    from sdcore.config import SEED003_ROWS
    from sdcore.paper import SEED003_TABLE1

    monkeypatch.setenv("SDLAB_RUNS_DIR", str(grid_runs))
    at = settle(page(app(grid_runs).run(), "compare"))
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    mine, paper = [d.value for d in at.dataframe if "terms" in d.value.columns]
    assert len(mine) == len(paper) == len(SEED003_ROWS) == 8
    assert mine["terms"].tolist() == paper["terms"].tolist() == [
        "labels only", "BYOT", "PS-KD", "DMFL", "PS-KD + BYOT", "PS-KD + DMFL", "BYOT + DMFL", "PS-KD + BYOT + DMFL"]
    assert mine["seeds"].tolist() == [2, 0, 0, 0, 0, 0, 0, 2]
    assert "±" in mine["top-1 error (%)"].iloc[0] and "±" in mine["ECE (%)"].iloc[7]
    assert mine["NLL"].iloc[1] == "missing"
    assert paper["top-1 error (%)"].tolist() == [r[0] for r in SEED003_TABLE1["resnet18"]]
    captions = " ".join(c.value for c in at.caption)
    assert "ResNet-18 on CIFAR-100" in " ".join(m.value for m in at.markdown) and "not the values" in captions
    assert "Top-1 error, best first" in captions
    commands = at.code[0].value.splitlines()
    assert len(commands) == 6 * 2  # 6 missing rows x 2 seeds
    assert any("--set method=byot+dmfl --set seed=1" in c for c in commands)
    assert any(b.label == "Train the 12 missing run(s)" for b in at.button)
    assert len(list(grid_runs.glob("*/analysis/calibration-*.json"))) == 4  # computed once, kept in each run
    at = page(app(grid_runs).run(), "byot")  # runs with exits of any terms; the labels-only run is the baseline
    no_exception(at)
    assert len(at.selectbox[0].options) == 2
    caption = next(c.value for c in at.caption if "Dashed line" in c.value)
    assert re.search(r"run `[\d-]+-demo-baseline[-\d]*`", caption), caption


@pytest.mark.parametrize("name", ("live", "compare"))
def test_presentation_mode_enlarges_the_charts_and_the_page_still_renders(finished_runs, monkeypatch, name):
    """The sidebar toggle (session state "presentation") reaches every chart drawn through ui.chart."""
    import json

    monkeypatch.setenv("SDLAB_RUNS_DIR", str(finished_runs))
    at = settle(page(app(finished_runs).run(), name))
    normal = {c.key: json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart")}
    at.toggle(key="presentation").set_value(True).run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    big = {c.key: json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart")}
    ours = [k for k in big if k.startswith(("curves-", "compare-"))]
    assert ours, list(big)
    for key in ours:
        assert normal[key]["font"]["size"] == 15 and big[key]["font"]["size"] >= 20
        assert big[key]["xaxis"]["tickfont"]["size"] >= 20 and big[key]["legend"]["font"]["size"] >= 20
    at = page(at, "runs")  # the toggle is the sidebar's: it stays on across pages
    no_exception(at)
    assert at.toggle(key="presentation").value is True


def held_kind(monkeypatch, kind: str):
    """Make ``kind``'s jobs wait for the returned event before they compute (to see them running)."""
    import dataclasses
    import threading

    from sdcore.analysis import registry

    release, entry = threading.Event(), registry.get(kind)

    def held(*args, **kwargs):
        assert release.wait(120)
        return entry.compute(*args, **kwargs)

    monkeypatch.setitem(registry._KINDS, kind, dataclasses.replace(entry, compute=held))
    return release


def uncached(root):
    """The runs in ``root`` without their analysis/ caches (the shared finished runs may hold some)."""
    import shutil

    for folder in root.glob("*/analysis"):
        shutil.rmtree(folder)
    return root


def progress_lines(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.main.get("progress")]  # the sidebar lists every job too


def test_a_page_queues_one_job_for_a_missing_result_shows_its_progress_then_the_result(runs_copy, monkeypatch):
    from app import ui

    release = held_kind(monkeypatch, "gallery")  # the page's one job (it computes the comparison it needs first)
    at = page(app(uncached(runs_copy)).run(), "students")
    no_exception(at)
    jobs = [h for h in ui.manager().jobs() if h.kind == "analysis"]
    assert len(jobs) == 1 and jobs[0].request.kind == "gallery" and not jobs[0].done
    assert not at.dataframe and any("in the background" in i.value for i in at.info)
    assert progress_lines(at) and any(b.label == "Cancel" for b in at.button)
    deadline = time.monotonic() + 60
    while "analysis" not in jobs[0].progress().metrics and time.monotonic() < deadline:
        time.sleep(0.05)  # the job reports before it computes
    at.run()  # a rerun while it runs follows the same job
    assert len([h for h in ui.manager().jobs() if h.kind == "analysis"]) == 1
    assert progress_lines(at)[0].startswith("test images the rounds disagree on · 0% · "), progress_lines(at)
    release.set()
    settle(at)
    no_exception(at)
    assert at.dataframe[0].value["model"].tolist() == ["student 1", "student 2"] and not progress_lines(at)
    assert len([h for h in ui.manager().jobs() if h.kind == "analysis"]) == 1


def test_cancel_on_a_page_stops_its_analysis_job(runs_copy, monkeypatch):
    from app import ui
    from sdcore.analysis.registry import peek

    release = held_kind(monkeypatch, "robustness")
    at = page(app(uncached(runs_copy)).run(), "robustness")
    jobs = [h for h in ui.manager().jobs() if h.kind == "analysis"]
    assert len(jobs) == 2  # one per picked run (the demo and the BYOT run)
    next(b for b in at.button if b.label == "Cancel").click().run()
    release.set()
    cancelled = [h for h in jobs if h.wait(120) and h.progress().status == "cancelled"]
    assert len(cancelled) == 1
    assert peek(cancelled[0].run, "robustness") == (False, None)
    settle(at.run())
    no_exception(at)
    assert any("was cancelled" in w.value for w in at.warning) and any(b.label == "Compute again" for b in at.button)
