"""The one-file report (sdcore.report): every section of a tiny trained run, plotly.js once and nothing fetched,
the rounds table equal to summary.json, cached analyses read (never computed) and damaged ones named, every
method's loss formula as MathML, a sweep's report, and the `report` command's exits and one-line errors."""
import html
import json
import re
import shutil
import statistics

import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from sdcore import plots, report, terms
from sdcore import sweep as sw
from sdcore.analysis import registry, runner
from sdcore.analysis.runner import AnalysisSpec, analyze
from sdcore.cli import main
from sdcore.config import preset
from sdcore.losses import BYOT_STYLES
from sdcore.runs import RunError, RunStore
from tests.helpers import trained_sweep

TINY = {"epochs": 2, "rounds": 1, "data.subset": 200, "model.width": 0.25}
CURVATURE = AnalysisSpec(rounds=(0, 1), top_k=3, trace_samples=4, subset=64, density=False, device="cpu")


@pytest.fixture(scope="module")
def kd_run(trained, tmp_path_factory):
    """A tiny KD run (teacher + 1 student) with λ_max/trace, calibration and agreement cached."""
    run = trained(root=tmp_path_factory.mktemp("report"), **TINY)
    analyze(run, CURVATURE)
    registry.get_or_compute(run, "calibration")
    registry.get_or_compute(run, "agreement")
    return run


@pytest.fixture
def kd_copy(kd_run, tmp_path):
    """A private copy of the run's folder (tests that damage it)."""
    shutil.copytree(kd_run.path, tmp_path / kd_run.id)
    return RunStore(tmp_path).get(kd_run.id)


@pytest.fixture
def never_computes(monkeypatch):
    """Any analysis computation fails the test: a report reads the cache only."""
    import dataclasses

    def refuse(*args, **kwargs):
        raise AssertionError("the report computed an analysis")

    for name in registry.kinds():
        monkeypatch.setitem(registry._KINDS, name, dataclasses.replace(registry.get(name), compute=refuse))
    monkeypatch.setattr(runner, "_compute", refuse)


def section(doc: str, sid: str) -> str:
    start = doc.index(f'<section id="{sid}">')
    return doc[start:doc.index("</section>", start)]


def rows(html: str) -> list[list[tuple[str, str | None]]]:
    """The body rows of the first table in ``html``: (cell text without tags, data-value or None) per cell."""
    body = html[html.index("<tbody>"):html.index("</tbody>")]
    return [[(re.sub(r"<[^>]+>", "", text), (re.search(r'data-value="([^"]*)"', attrs) or [None, None])[1])
             for attrs, text in re.findall(r"<td([^>]*)>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def without_plotly(doc: str) -> str:
    js = get_plotlyjs()
    assert doc.count(js) == 1, "plotly.js must be inlined exactly once"
    return doc.replace(js, "")


# What would make a browser fetch something: a src/href/action to another host, a CSS @import or url() of one,
# a <link> (stylesheet, font, preload) at all.
FETCH = re.compile(r"""(?:src|href|action|data)\s*=\s*["']?\s*(?:https?:)?//|@import|url\(\s*["']?\s*(?:https?:)?//"""
                   r"""|<link\b|<iframe\b|<img\b[^>]*src\s*=\s*["']?(?!data:)""", re.I)


def test_a_run_report_has_every_section_one_plotly_js_and_fetches_nothing(kd_run, never_computes):
    doc = report.run_report(kd_run)
    rest = without_plotly(doc)
    for sid, title in report.RUN_SECTIONS.items():
        assert f'<section id="{sid}"><h2>{title}</h2>' in rest, title
    assert "could not be built" not in rest and "cannot be read" not in rest
    assert not FETCH.search(rest), FETCH.search(rest).group(0)
    assert "<script src" not in rest and "mathjax" not in rest.lower()
    figures = re.findall(r'<div id="(figure-\d+)" class="plotly-graph-div"', rest)
    assert len(figures) == len(set(figures)) == rest.count("Plotly.newPlot(") >= 3  # curves + curvature + calibration
    assert "<math display=\"block\">" in section(rest, "loss") and "<merror" not in rest
    head = rest[:rest.index("<nav>")]
    assert kd_run.id in head and "done" in head and "device" in head and "created" in head


def test_the_rounds_table_holds_summary_json_numbers(kd_run):
    summary = json.loads((kd_run.path / "summary.json").read_text())
    table = rows(section(report.run_report(kd_run), "rounds"))
    assert [r[0][0] for r in table] == [str(r["round"]) for r in summary["rounds"]]
    for shown, saved in zip(table, summary["rounds"]):
        text, value = shown[2]  # round, model, test accuracy
        assert float(value) == saved["test_acc"] and text == f"{saved['test_acc']:.2f}"
        kept = shown[4] if len(summary["rounds"]) > 1 else shown[3]
        assert int(kept[1]) == saved["best_epoch"]
    delta = float(table[1][3][1])
    assert delta == pytest.approx(summary["rounds"][1]["test_acc"] - summary["rounds"][0]["test_acc"])


def test_cached_analyses_are_shown_with_their_numbers_and_the_rest_said_missing(kd_run, never_computes):
    doc = report.run_report(kd_run)
    analyses = section(doc, "analyses")
    results, missing = runner.cached_results(kd_run, CURVATURE)
    assert missing == 0
    hessian = analyses[analyses.index("<h3>Hessian curvature</h3>"):]
    for k, shown in enumerate(rows(hessian)):
        assert shown[0][0] == plots.round_name(k, "kd")
        assert float(shown[1][1]) == results[("eigen", k)].values[0]
        assert float(shown[3][1]) == results[("trace", k)].trace
    calibration = registry.get_or_compute(kd_run, "calibration")
    cal = rows(analyses[analyses.index("<h3>Calibration</h3>"):])
    assert [float(r[4][1]) for r in cal] == [100 * m.report.ece for m in calibration]
    assert "<h3>Teacher/student agreement</h3>" in analyses
    not_computed = analyses[analyses.index("<h3>Not computed</h3>"):]
    assert "robustness" in not_computed and "Loss surface and flatness" in not_computed
    never = rows(analyses[analyses.index("<h3>Not applicable to this run</h3>"):])
    assert ("Exit latency", f"run {kd_run.id} is a kd run without exits; exit latency needs a BYOT run") in \
        [(r[0][0], r[1][0]) for r in never]


def test_damaged_stale_and_unknown_records_are_named_and_the_rest_renders(kd_copy, never_computes):
    folder = kd_copy.path / "analysis"
    calibration = next(folder.glob("calibration-*.json"))
    calibration.write_text("{ not json")
    trace = next(folder.glob("trace-0-*.json"))
    rec = json.loads(trace.read_text())
    rec["result"]["trace"] = "a lot"
    trace.write_text(json.dumps(rec))
    agreement = next(folder.glob("agreement-*.json"))
    rec = json.loads(agreement.read_text())
    rec["finished_rounds"] = [0]
    agreement.write_text(json.dumps(rec))
    (folder / "mystery-0123456789.json").write_text('{"kind": "mystery", "result": 1}')

    doc = report.run_report(kd_copy)
    analyses = section(doc, "analyses")
    cal = analyses[analyses.index("<h3>Calibration</h3>"):]
    assert f"analysis/{calibration.name}</strong>: damaged:" in cal[:cal.index("</div>")]
    hessian = analyses[analyses.index("<h3>Hessian curvature</h3>"):analyses.index("<h3>Teacher/student")]
    assert f"analysis/{trace.name}</strong>: damaged or written by another sdlab version" in hessian
    teacher, student = rows(hessian[hessian.index("<table>"):])
    assert teacher[3] == ("–", None) and student[3][1] is not None  # the damaged trace only; λ_max still shown
    assert f"analysis/{agreement.name}</strong>: stale: computed when rounds [0] were finished" in analyses
    assert "mystery-0123456789.json</strong>: an analysis kind this sdlab does not know (mystery)" in analyses
    rest = without_plotly(doc)
    assert "could not be built" not in rest
    for sid in report.RUN_SECTIONS:
        assert f'<section id="{sid}">' in rest


def test_a_section_that_fails_says_so_and_the_others_render(kd_run, monkeypatch):
    monkeypatch.setattr(plots, "training_curves", lambda *a, **k: 1 / 0)
    doc = report.run_report(kd_run)
    assert "This section could not be built: ZeroDivisionError: division by zero" in section(doc, "curves")
    assert "could not be built" not in section(doc, "rounds") + section(doc, "analyses") + section(doc, "paper")


def test_the_paper_section_says_what_the_paper_found_and_what_this_run_shows(kd_run):
    paper = html.unescape(section(report.run_report(kd_run), "paper"))
    assert "Pham et al. find that one round of self-distillation lifts the student above its teacher" in paper
    s = kd_run.summary().rounds
    beat = int(s[1].test_acc > s[0].test_acc)
    assert f"{beat} of 1 finished student(s) beat the teacher's {s[0].test_acc:.2f}%" in paper
    assert "student 1 is <strong>" in paper  # λ_max and trace are cached: the flatness verdict is there
    assert "mirrors none of the papers' tables" in paper  # a demo run: no paper table to put it beside


def test_a_run_of_a_paper_preset_sits_beside_the_papers_table(kd_copy):
    cfg = kd_copy.config()
    kd_copy.write_config(cfg.replace(name="pham-cifar10-resnet18-a0.2"))
    paper = section(report.run_report(kd_copy), "paper")
    assert "Pham et al., Table 2 (ResNet18, CIFAR-10, α=0.2, no data augmentation)" in paper
    table = rows(paper[paper.index("Beside the paper"):])
    assert table[0][:2] == [("paper", None), ("95.57 ± 0.15", None)]
    assert float(table[1][1][1]) == kd_copy.summary().rounds[0].test_acc  # this run's teacher
    assert "This run differs from the preset in" in paper and "data.name" in paper


def test_an_unreadable_config_is_one_error(kd_copy):
    (kd_copy.path / "config.json").write_text("[]")
    with pytest.raises(RunError, match=rf"cannot report run {kd_copy.id}: unreadable: config.json"):
        report.run_report(kd_copy)


def test_text_from_files_is_escaped_and_cannot_close_a_script():
    fig = report._Page().figure(go.Figure(go.Scatter(x=[1], y=[2], name="</script><b>x")), "a <b> caption")
    assert "</script><b>" not in fig and "\\u003c/script>" in fig and "a &lt;b&gt; caption" in fig
    plain = report._table(("h",), [("$x$ **y** <i>",)])  # a value from a file: shown as it is
    assert "<td>$x$ **y** &lt;i&gt;</td>" in plain
    assert "<td><math><semantics>" in report._table(("h",), [("$x$",)], rich=True)  # sdlab's own help texts


# ---------------------------------------------------------------- LaTeX -> MathML


def _configs():
    for method in terms.all_methods():
        styles = BYOT_STYLES if terms.has(method, "byot") else ["sdlab"]
        for style in styles:
            yield pytest.param(method, style, id=f"{method}-{style}")


@pytest.mark.parametrize("method,style", list(_configs()))
def test_every_method_formula_renders_as_mathml_without_unknown_commands(method, style):
    cfg = preset("demo")
    cfg = cfg.replace(method=method, byot_style=style, rounds=cfg.rounds if terms.is_multi_round(method) else 0,
                      **{"model.exits": terms.needs_exits(method), "model.peers": 2 if terms.uses(method, "peers")
                         else 1}).validate()
    out, unknown = report.mathml(terms.formula(cfg))
    assert unknown == [] and "<merror" not in out
    assert out.count("<mtr>") == terms.formula(cfg).count(r" \\ ") + 1  # one table row per formula row


@pytest.mark.parametrize("term", list(terms.TERMS))
def test_every_terms_symbols_render(term):
    shown = report.text(terms.TERMS[term].symbols)
    assert "<merror" not in shown and "$" not in shown and "<math>" in shown


def test_mathml_of_the_pieces_the_formulas_use():
    m = lambda tex: report.mathml(tex, display=False)[0]  # noqa: E731
    assert "<mfrac><mrow><mn>1</mn></mrow><mrow><mi>K</mi><mo>−</mo><mn>1</mn></mrow></mfrac>" in m(r"\tfrac{1}{K-1}")
    assert '<mstyle displaystyle="false"><mfrac>' in m(r"\tfrac{t}{15}")
    assert m(r"\sum_{i<C} x").count("<munder>") == 1  # limits under the sum in display style
    assert "<msub><mo class=\"large\"" in m(r"\textstyle\sum_{x} y")  # at its side after \textstyle
    brace = m(r"\underbrace{0.20}_{\alpha}")
    assert '<munder><mrow class="brace"><mrow><mn>0.20</mn></mrow></mrow><mrow><mi>α</mi></mrow></munder>' in brace
    assert "<msubsup><mi>p</mi><mi>C</mi><mrow><mo stretchy=\"false\">(</mo>" in m(r"p_C^{(t-1)}")
    assert "<mtext>the deepest</mtext>" in m(r"(\text{the deepest})")
    assert "<mi>ℒ</mi>" in m(r"\mathcal{L}") and "<mi>CE</mi>" in m(r"\mathrm{CE}")
    assert "<mo>&lt;</mo>" in m("a<b")
    assert "<mn>0</mn><mspace width=\"0.1667em\"></mspace><msup><mn>10</mn><mn>−6</mn></msup>" in m(r"0\,1e-06")
    assert "<mrow><mn>2.5</mn><mo>×</mo><msup><mn>10</mn><mn>3</mn></msup></mrow>" in m("2.5e+03")
    out, unknown = report.mathml(r"\frobnicate{x} + y")
    assert unknown == [r"\frobnicate"] and "<merror><mtext>\\frobnicate</mtext></merror>" in out
    aligned = m(r"\begin{aligned}a &= b \\ &+ c\end{aligned}")
    assert aligned.count("<mtr>") == 2 and aligned.count('<mo form="infix">') == 2  # &= and &+ are binary


# ---------------------------------------------------------------- a sweep


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A sweep over two seeds whose trials are trained here, in order, without Ray; a third trial pending."""
    store = RunStore(tmp_path_factory.mktemp("sweep"))
    base = preset("demo").replace(name="tiny", **{**TINY, "epochs": 1})
    return store, trained_sweep(store, base, ["seed=0,1,2"], (0, 1))


def test_a_sweep_report_has_its_grid_trials_and_the_mean_over_seeds(tiny_sweep):
    store, sweep = tiny_sweep
    doc = report.sweep_report(store, sweep)
    rest = without_plotly(doc)
    for sid, title in report.SWEEP_SECTIONS.items():
        assert f'<section id="{sid}"><h2>{title}</h2>' in rest, title
    assert not FETCH.search(rest) and "could not be built" not in rest
    assert rows(section(rest, "grid"))[0] == [("seed", None), ("0, 1, 2", None)]
    trials = rows(section(rest, "trials"))
    states = sw.trial_states(store, sweep)
    assert [(t[0][0], t[1][0], t[2][0], t[5][0]) for t in trials] == \
        [(str(s.index), " ".join(s.overrides), s.state, s.run_id or "–") for s in states]
    assert [s.state for s in states] == ["done", "done", "pending"]
    comparison = rows(section(rest, "comparison"))
    assert len(comparison) == 1 and comparison[0][1][0] == "2"  # the two seeds pooled into one row
    for k in (0, 1):
        accs = [s.test_acc[k] for s in states if s.state == "done"]
        assert float(comparison[0][2 + k][1]) == pytest.approx(statistics.fmean(accs))
        assert comparison[0][2 + k][0] == f"{statistics.fmean(accs):.2f} ± {statistics.stdev(accs):.2f}"
    assert rest.count("Plotly.newPlot(") == 1


# ---------------------------------------------------------------- the command


def test_cli_writes_the_report_into_the_run_folder_and_prints_its_path(kd_copy, capsys):
    assert main(["report", kd_copy.id, "--runs-dir", str(kd_copy.path.parent)]) == 0
    path = kd_copy.path / "report.html"
    assert capsys.readouterr().out.strip() == str(path)
    doc = path.read_text(encoding="utf-8")
    assert doc.startswith("<!DOCTYPE html>") and kd_copy.id in doc


def test_cli_writes_a_sweep_report_and_to_a_given_file(tiny_sweep, tmp_path, capsys):
    store, sweep = tiny_sweep
    out = tmp_path / "nested" / "sweep.html"
    assert main(["report", sweep.id, "--runs-dir", str(store.root), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and "sdlab sweep report" in out.read_text()


@pytest.mark.parametrize("args,message", [
    (["nope"], "error: no run or sweep 'nope' in {root} (see `python -m sdcore runs` and `python -m sdcore sweeps`)"),
    (["{run}", "--out", ""], "error: --out must be a file path, got ''"),
    (["{run}", "--out", "{root}"], "error: cannot write {root}: Is a directory"),
    (["{run}", "--pdf"], "error: a PDF needs Chromium (apt-get install chromium, or set $SDLAB_CHROMIUM); the HTML "
                         "report needs nothing: drop --pdf and print it from a browser"),
])
def test_cli_errors_are_one_line_with_exit_code_2(kd_copy, capsys, monkeypatch, args, message):
    monkeypatch.setenv(report.CHROMIUM_ENV, "/nonexistent/chromium")
    root = str(kd_copy.path.parent)
    argv = ["report"] + [a.format(run=kd_copy.id, root=root) for a in args] + ["--runs-dir", root]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == message.format(root=kd_copy.path.parent.resolve() if "no run" in message else root) + "\n"
    assert not (kd_copy.path / "report.pdf").exists()


def test_live_and_runs_offer_the_report_built_only_when_clicked(kd_copy, monkeypatch):
    """Both pages show the button; its data is a callable (a deferred download), so no page render builds a report."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SDLAB_RUNS_DIR", str(kd_copy.path.parent))
    built = []
    monkeypatch.setattr(report, "_document", lambda *a, **k: built.append(1) or "")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=120).run()
    for name in ("live", "runs"):
        at.switch_page(f"../pages/{name}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        buttons = [b.proto for b in at.get("download_button") if b.proto.label == "Download report (HTML)"]
        assert len(buttons) == 1 and buttons[0].HasField("deferred_file_id"), name
    assert built == []
