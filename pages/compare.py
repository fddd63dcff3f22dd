"""Compare: teacher vs students across runs, in the style of Pham et al. Table 2."""
from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd
import streamlit as st

from app import ui
from app.ui.analyses import run_results
from sdcore import terms
from sdcore.analysis.compare import (
    compare_rows_to_csv,
    compare_table,
    group_key,
    missing_runs,
    order_agreement,
    term_grid,
    term_grid_csv,
    term_groups,
)
from sdcore.analysis.ensembles import ban_vs_ensemble, by_teacher_count
from sdcore.config import SEED003_ROWS, ConfigError, preset
from sdcore.data import DataError
from sdcore.paper import SEED003_COLUMNS, SEED003_TABLE1
from sdcore.plots import accuracy_by_round, ensemble_sizes, round_name, teacher_count_curves
from sdcore.runs import RunError

st.title("Compare teacher and students")
by_id = ui.runs_picker("Runs to compare (runs that differ only by seed are pooled: mean ± std)", default_count=12,
                       empty="No run has a finished round yet. Launch the demo from **Train**; its rounds appear "
                             "here as they end.")
chosen = list(by_id)

rows = compare_table(ui.store().get(i) for i in chosen)


def cell(stat) -> str:
    return f"{stat.mean:.2f} ± {stat.std:.2f}" if stat.n > 1 else f"{stat.mean:.2f}"


def cell_t(stat: tuple[float, float, int] | None) -> str | None:
    """(mean, std, n) as text; None stays None (the table shows –)."""
    return None if stat is None else (f"{stat[0]:.2f} ± {stat[1]:.2f}" if stat[2] > 1 else f"{stat[0]:.2f}")


table = pd.DataFrame([
    {"config": r.label, "seeds": len(r.seeds),
     **{round_name(s.round, r.method): cell(s) + ("" if s.round == 0 else f"  {ui.arrow(r.delta(s.round))}")
        for s in r.rounds}}
    for r in rows]).fillna("")
students = [c for c in table.columns if c.startswith("student")]


st.subheader("Test accuracy (%) by round")
st.dataframe(table.style.map(ui.delta_color, subset=students), hide_index=True, width="stretch")
ui.download_csv(compare_rows_to_csv(rows), "compare", key="dl-compare")

fig = accuracy_by_round(rows)
ui.chart(fig, key="compare-chart", name="accuracy-by-round")
ui.download_figure(fig, "accuracy-by-round", key="dl-compare-fig", caption="runs " + ", ".join(chosen))

def train_command(cfg, row: str, base) -> str:
    """The CLI line that trains one missing row: the demo preset when the grid is the demo's, else the
    grid's own config file with the row's terms (a method override brings the exits it needs)."""
    if group_key(cfg) == group_key(preset(f"demo-{row}")):
        return f"python -m sdcore train --preset demo-{row} --set seed={cfg.seed}"
    path = base.path / "config.json"
    try:
        path = path.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return (f"python -m sdcore train --config {shlex.quote(str(path))} --set method={cfg.method} "
            f"--set seed={cfg.seed} --set {shlex.quote(f'name={cfg.name}')}")  # a name may hold spaces or ; $( …


def lowest(df: pd.DataFrame) -> pd.DataFrame:
    """CSS for a table of numbers: the lowest (best) value of each column in bold green."""
    best = df.eq(df.min()) & df.notna()
    return best.map(lambda b: "background-color: #d3f9d8; font-weight: 600" if b else "")


def terms_grid() -> None:
    """Seed paper 003 Table 1 from the library's single-network runs, beside the paper's ResNet-18 rows."""
    st.subheader("Self-distillation terms: seed paper 003's Table 1")
    infos = [i for i in ui.run_infos() if i.rounds_done > 0 and i.status != "unreadable"]
    groups = term_groups((ui.store().get(i.id), c) for i in infos if (c := ui.run_config(i.id)) is not None)
    if not groups:
        st.caption("Seed paper 003 trains one network with every combination of PS-KD, BYOT and DMFL (its Table 1). "
                   "Runs that differ only in those terms (and seed) line up here, mean ± std over seeds: train the "
                   "`demo-<row>` presets, e.g. `python -m sdcore train --preset demo-pskd-byot-dmfl --set seed=0`.")
        if st.button("Train the 8 rows on the demo's data (seed 0)", icon=":material/grid_view:",
                     disabled=bool(ui.manager().active()), key="grid-train-demo",
                     help="Queues the demo-<row> presets; they train one after another "
                          "(Live shows each one's time left)."):
            queue([preset(f"demo-{row}") for row in SEED003_ROWS])
        return
    pick = 0
    if len(groups) > 1:
        pick = st.selectbox("Setting", range(len(groups)), key="compare_grid_group",
                            format_func=lambda i: f"{groups[i].label} ({len(groups[i].methods)} of 8 rows, "
                                                  f"{len(groups[i].members)} runs)")
    group = groups[pick]
    # Each run's calibration is a background job; the grid shows what is ready ("missing" meanwhile).
    calibrations = run_results([r for r, _ in group.members], "calibration", key="grid")
    rows = term_grid(group, calibrations, {r.id: ui.metrics(r) for r, _ in group.members})
    names = [terms.label(r.method) for r in rows]
    mine = pd.DataFrame({c: [r.values[c].mean if r.values[c] else None for r in rows] for c in SEED003_COLUMNS},
                        index=names)
    cells = pd.DataFrame({"terms": names, "seeds": [len(r.run_ids) for r in rows],
                          **{c: [f"{r.values[c].mean:.2f} ± {r.values[c].std:.2f}" if r.values[c] and r.values[c].n > 1
                                 else f"{r.values[c].mean:.2f}" if r.values[c] else "missing" for r in rows]
                             for c in SEED003_COLUMNS}})
    st.markdown(f"**Your runs** — {ui.plain(group.label)}: mean ± std over seeds")
    css = lowest(mine).reset_index(drop=True)
    st.dataframe(cells.style.apply(lambda _: css.reindex(columns=cells.columns, fill_value=""), axis=None),
                 hide_index=True, width="stretch")
    ui.download_csv(term_grid_csv(rows), "terms-grid", key="dl-grid")
    paper = pd.DataFrame(SEED003_TABLE1["resnet18"], columns=list(SEED003_COLUMNS), index=names)
    st.markdown("**Seed paper 003, Table 1** — ResNet-18 on CIFAR-100, one run per row, time per epoch on its GPU")
    shown = paper.reset_index(names="terms")
    st.dataframe(shown.style.format(precision=2).apply(lowest, axis=None, subset=list(SEED003_COLUMNS)),
                 hide_index=True, width="stretch")
    have = mine.dropna(how="all")
    if len(have) > 1:
        agree = [(c, *order_agreement(have[c].dropna().to_dict(), paper[c].to_dict())) for c in SEED003_COLUMNS]
        order = lambda df: " < ".join(df["top-1 error (%)"].dropna().sort_values().index)  # noqa: E731
        st.caption(f"Top-1 error, best first — your runs: {order(have)}; the paper, same rows: "
                   f"{order(paper.loc[have.index])}. Pairs of rows in the paper's order: "
                   + ", ".join(f"{c} {same}/{n}" for c, same, n in agree) + ".")
    st.caption("Different data, network and hardware: the paper's numbers are ResNet-18 on CIFAR-100, yours are "
               f"your runs' ({ui.plain(group.label)}). Compare the ordering of the rows, not the values. Errors, NLL, "
               "ECE and AURC are of the deepest output on the test split (PS-KD's conventions, as on **Calibration**); "
               "this table reads every finished run in the library, not only the runs picked above.")
    missing = missing_runs(group)
    if missing:
        with st.expander(f"{len(missing)} run(s) missing: {len({r for r, _, _ in missing})} row(s) × the grid's "
                         f"seeds {', '.join(map(str, group.seeds))}", icon=":material/add_task:"):
            st.code("\n".join(train_command(cfg, row, group.members[0][0]) for row, _, cfg in missing),
                    language="bash")
            if st.button(f"Train the {len(missing)} missing run(s)", icon=":material/play_arrow:",
                         disabled=bool(ui.manager().active()), key="grid-train-missing",
                         help="Queues them here; they train one after another and fill the grid as they finish."):
                queue([cfg for _, _, cfg in missing])


def queue(cfgs) -> None:
    try:
        for cfg in cfgs:
            ui.manager().submit(cfg)
    except (ConfigError, DataError, RunError) as e:
        st.error(ui.plain(e))
        return
    st.success(f"Queued {len(cfgs)} run(s); follow them on **Live**. The grid fills in as they finish.")


terms_grid()


st.subheader("Do the students agree with their teacher?")
st.caption("Share of test images on which student k predicts the same class as the teacher (round 0).")
agree_rows = []
found = run_results([ui.store().get(i) for i in chosen if by_id[i].rounds_done >= 2], "agreement", key="agreement")
for run_id, stats in found.items():
    for a in stats:
        agree_rows.append({"run": run_id, "model": round_name(a.round), "agreement with teacher (%)": a.agreement,
                           "test accuracy (%)": a.test_acc})
if agree_rows:
    agree = pd.DataFrame(agree_rows)
    st.dataframe(agree.style.format({"agreement with teacher (%)": "{:.2f}", "test accuracy (%)": "{:.2f}"}),
                 hide_index=True, width="stretch")
    ui.download_csv(agree.to_csv(index=False), "agreement", key="dl-agree")
else:
    st.caption("Agreement needs a run with at least one finished student.")

st.subheader("Ensembles: BAN vs models trained independently")
kd_rows = [r for r in rows if terms.is_multi_round(r.method)]
if kd_rows:
    group = st.selectbox("Configuration", range(len(kd_rows)), format_func=lambda i: f"{kd_rows[i].label} "
                         f"({len(kd_rows[i].run_ids)} seed(s))", key="compare_ensemble_group",
                         index=max(range(len(kd_rows)), key=lambda i: len(kd_rows[i].run_ids)))
    ids = kd_rows[group].run_ids
    logits = run_results([ui.store().get(i) for i in ids], "test_logits", key="ensembles")
    if any(i not in logits for i in ids):
        st.stop()  # the jobs' progress shows above; the page reruns when they end
    try:
        sizes = ban_vs_ensemble([logits[i] for i in ids])
    except ValueError as e:
        st.error(ui.plain(e))
        st.stop()
    ens_fig = ensemble_sizes(sizes)
    ui.chart(ens_fig, key="compare-ensembles", name="ensembles")
    ens = pd.DataFrame([{"models (m)": r.size,
                         "BAN of rounds 0..m−1 (%)": cell_t(r.ban) or "–",
                         "m independent teachers (%)": "–" if r.independent is None else f"{r.independent:.2f}",
                         "round m−1 alone (%)": cell_t(r.last_student) or "–"} for r in sizes])
    st.dataframe(ens, hide_index=True, width="stretch")
    c1, c2 = st.columns(2)
    with c1:
        ui.download_csv(ens.to_csv(index=False), "ensembles", key="dl-ens-csv")
    with c2:
        ui.download_figure(ens_fig, "ensembles", key="dl-ens-fig",
                           caption=f"{kd_rows[group].label} · runs {', '.join(kd_rows[group].run_ids)}")
    st.caption("An ensemble averages its members' logits. BAN and 'round m−1 alone' are mean ± std over this "
               "configuration's runs (seeds); the independent ensemble averages the teachers of its first m runs, "
               "so train the preset with more seeds for larger m.")
else:
    st.caption("Ensembles need a self-distillation (KD) run.")

curves = by_teacher_count([(ui.store().get(i).config(), by_id[i].test_acc) for i in chosen])
if curves:
    st.subheader("More teachers, better student? (ensemble as teacher)")
    tc = teacher_count_curves(max(curves, key=len))
    ui.chart(tc, key="compare-teachers", name="teachers-vs-student")
    ui.download_figure(tc, "teachers-vs-student", key="dl-teachers")
    st.caption("Runs that differ only in the number of teachers (Train → Model → Teachers): round 0 trains N "
               "networks independently and their mean logits teach student 1. Pham et al. Fig. 3: the student "
               "improves as N grows.")

best = max(rows, key=lambda r: len(r.rounds))
verdict = ""
if len(best.rounds) > 1:
    d = best.delta(1)
    verdict = (f"\n\n**In your runs:** for *{ui.plain(best.label)}*, student 1 is {abs(d):.2f} points "
               f"{'above' if d > 0 else 'below'} the teacher (over {best.rounds[0].n} seed(s)).")
ui.explain(
    "Each row is one configuration; runs that differ only by their seed are pooled into mean ± std, like "
    "Pham et al.'s Table 2 (rows = setting, columns = teacher and rounds 1–3). An arrow compares a student "
    "with the teacher of the same row: ↑ green above, ↓ red below. Pham et al. report that one round of "
    "self-distillation consistently lifts the student above its teacher, while further rounds fluctuate "
    "(e.g. ResNet-18 α=0.2: 95.17 → 95.80 → 95.58 → 96.25). Agreement tells whether a student is a copy of "
    "its teacher: a student that beats its teacher while agreeing with it on most images corrects a few of "
    "its mistakes rather than learning something different. **Ensembles** (Pham et al. Sec. 4.2, Fig. 2): "
    "Born-again networks average the rounds of one chain; Pham et al. find an ensemble of as many models trained "
    "independently from scratch better at every size, because successive rounds grow alike." + verdict)
