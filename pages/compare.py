"""Compare: teacher vs students across runs, in the style of Pham et al. Table 2."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import ui
from sdcore.analysis.compare import agreement, compare_rows_to_csv, compare_table
from sdcore.analysis.ensembles import ban_vs_ensemble, by_teacher_count, test_logits
from sdcore.config import ConfigError
from sdcore.data import DataError
from sdcore.runs import RunError
from sdcore.plots import accuracy_by_round, ensemble_sizes, round_name, teacher_count_curves

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
st.plotly_chart(fig, width="stretch", key="compare-chart")
ui.download_figure(fig, "accuracy-by-round", key="dl-compare-fig")

st.subheader("Do the students agree with their teacher?")
st.caption("Share of test images on which student k predicts the same class as the teacher (round 0).")
agree_rows = []
for run_id in chosen:
    if by_id[run_id].rounds_done < 2:
        continue
    for a in agreement(ui.store().get(run_id)):
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
kd_rows = [r for r in rows if r.method == "kd"]
if kd_rows:
    group = st.selectbox("Configuration", range(len(kd_rows)), format_func=lambda i: f"{kd_rows[i].label} "
                         f"({len(kd_rows[i].run_ids)} seed(s))", key="compare_ensemble_group",
                         index=max(range(len(kd_rows)), key=lambda i: len(kd_rows[i].run_ids)))
    try:
        with st.spinner("Predicting the test split with every round's model (cached afterwards)…"):
            sizes = ban_vs_ensemble([test_logits(ui.store().get(i)) for i in kd_rows[group].run_ids])
    except (ConfigError, DataError, RunError, ValueError) as e:
        st.error(str(e))
        st.stop()
    ens_fig = ensemble_sizes(sizes)
    st.plotly_chart(ens_fig, width="stretch", key="compare-ensembles")
    ens = pd.DataFrame([{"models (m)": r.size,
                         "BAN of rounds 0..m−1 (%)": cell_t(r.ban) or "–",
                         "m independent teachers (%)": "–" if r.independent is None else f"{r.independent:.2f}",
                         "round m−1 alone (%)": cell_t(r.last_student) or "–"} for r in sizes])
    st.dataframe(ens, hide_index=True, width="stretch")
    c1, c2 = st.columns(2)
    with c1:
        ui.download_csv(ens.to_csv(index=False), "ensembles", key="dl-ens-csv")
    with c2:
        ui.download_figure(ens_fig, "ensembles", key="dl-ens-fig")
    st.caption("An ensemble averages its members' logits. BAN and 'round m−1 alone' are mean ± std over this "
               "configuration's runs (seeds); the independent ensemble averages the teachers of its first m runs, "
               "so train the preset with more seeds for larger m.")
else:
    st.caption("Ensembles need a self-distillation (KD) run.")

curves = by_teacher_count([(ui.store().get(i).config(), by_id[i].test_acc) for i in chosen])
if curves:
    st.subheader("More teachers, better student? (ensemble as teacher)")
    tc = teacher_count_curves(max(curves, key=len))
    st.plotly_chart(tc, width="stretch", key="compare-teachers")
    ui.download_figure(tc, "teachers-vs-student", key="dl-teachers")
    st.caption("Runs that differ only in the number of teachers (Train → Model → Teachers): round 0 trains N "
               "networks independently and their mean logits teach student 1. Pham et al. Fig. 3: the student "
               "improves as N grows.")

best = max(rows, key=lambda r: len(r.rounds))
verdict = ""
if len(best.rounds) > 1:
    d = best.delta(1)
    verdict = (f"\n\n**In your runs:** for *{best.label}*, student 1 is {abs(d):.2f} points "
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
