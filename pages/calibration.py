"""Calibration: ECE, NLL, Brier, AURC and top-1/top-5 error per round (or BYOT exit), reliability diagrams."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import ui
from app.ui.analyses import run_result
from sdcore import terms
from sdcore.analysis.calibration import CONVENTIONS, CalibrationSettings, describe
from sdcore.plots import ENSEMBLE_COLOR, exit_color, exit_name, reliability_diagram, round_color, round_name

st.title("Calibration: can you trust each model's confidence?")
run, _ = ui.run_picker("calibration_run", lambda i: i.rounds_done > 0,
                       empty="No run with a finished round yet. Launch the demo from **Train**.")
convention = st.selectbox("Convention", list(CONVENTIONS), format_func=lambda c: CONVENTIONS[c].label,
                          key="calibration_convention",
                          help="How ECE bins the confidences and which optimum E-AURC subtracts. PS-KD's Table 1 "
                               "comes from its authors' code (utils/metric.py), the default here.")
with ui.shown_errors():
    cfg = run.config()
method = cfg.method
results = run_result(run, "calibration", CalibrationSettings(convention=convention), key="calibration")

exits = [m for m in results if m.exit is not None]


def name(m) -> str:
    if m.ensemble:
        return "ensemble of exits"
    return round_name(m.round, method) if m.exit is None else exit_name(m.exit, len(exits))


def color(m) -> str:
    if m.ensemble:
        return ENSEMBLE_COLOR
    return round_color(m.round) if m.exit is None else exit_color(m.exit, len(exits))


table = pd.DataFrame([{"model": name(m), "top-1 error (%)": m.report.top1_err, "top-5 error (%)": m.report.top5_err,
                       "NLL": m.report.nll, "ECE (%)": 100 * m.report.ece, "Brier": m.report.brier,
                       "AURC (×10³)": 1000 * m.report.aurc, "E-AURC (×10³)": 1000 * m.report.eaurc}
                      for m in results])
st.caption(f"Test split, {results[0].report.examples:,} images; "
           f"{describe(results[0].report.convention, results[0].report.n_bins)}. Lower is better in every column.")
st.dataframe(table.style.format(precision=2).highlight_min(subset=table.columns[1:], color="#d3f9d8"),
             hide_index=True, width="stretch")
c1, c2 = st.columns(2)
with c1:
    ui.download_csv(table.to_csv(index=False), f"{run.id}-calibration", key="dl-cal-csv")
with c2:
    st.download_button("Download all numbers (JSON)",
                       json.dumps([{"round": m.round, "exit": m.label, **m.report.to_dict()} for m in results]),
                       file_name=f"{run.id}-calibration.json", mime="application/json", on_click="ignore",
                       icon=":material/download:")

st.subheader("Reliability diagram")
fig = reliability_diagram([(name(m), color(m), m.report.reliability) for m in results])
ui.chart(fig, key="cal-reliability", name=f"{run.id}-reliability")
ui.download_figure(fig, f"{run.id}-reliability", key="dl-cal-fig", caption=ui.run_caption(run.id))

verdict = ""
if terms.is_multi_round(cfg) and len(results) > 1:
    teacher = results[0].report
    better = [name(m) for m in results[1:] if m.report.ece < teacher.ece]
    verdict = (f"\n\n**This run:** the teacher's ECE is {100 * teacher.ece:.2f}%; "
               + (f"better calibrated than it: {', '.join(better)}." if better else
                  "no student is better calibrated than it."))
elif exits:
    best = min(results, key=lambda m: m.report.ece)
    verdict = f"\n\n**This run:** the best-calibrated classifier is {name(best)} (ECE {100 * best.report.ece:.2f}%)."
ui.explain(
    "A model is **calibrated** when its confidence matches its accuracy: of the images it labels with 80% "
    "confidence, 80% are right. The **reliability diagram** bins the test images by confidence (max softmax "
    "probability) and plots each bin's accuracy; points under the diagonal are over-confident. **ECE** is "
    "the examples-weighted mean gap between accuracy and confidence over the bins (Guo et al. 2017; PS-KD's "
    "code uses 10 bins of width 0.1, Guo's 15); "
    "**NLL** and **Brier** score the whole predicted distribution; **AURC** is the mean error rate when only "
    "the k most confident predictions are kept, over all k (Geifman et al. 2019) — low when the model's "
    "confidence ranks its mistakes last; **E-AURC** subtracts the best AURC possible at the same error rate. "
    "PS-KD's Table 1 (ResNet-18, CIFAR-100) reports these: plain training ECE 5.14%, AURC 56.92×10⁻³; with "
    "PS-KD 4.21% and 50.44×10⁻³; BYOT's exits were the worst calibrated (ECE 11.24%). Soft targets, from a "
    "teacher or from the model's own past, are a learned label smoothing, which is why distilled students "
    "are often better calibrated than their teacher." + verdict)
