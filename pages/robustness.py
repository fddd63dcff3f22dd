"""Robustness: accuracy of every round under corruptions of the test split, ID vs OOD, and the α trade-off."""
from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd
import streamlit as st

from app import ui
from app.ui.analyses import run_results
from sdcore import terms
from sdcore.analysis.compare import config_label
from sdcore.analysis.robustness import CORRUPTIONS, alpha_tradeoff
from sdcore.plots import alpha_tradeoff as alpha_figure
from sdcore.plots import corruption_curves, id_vs_ood, round_name

st.title("Robustness: does distillation carry off-distribution?")
by_id = ui.runs_picker("Runs (runs that differ only in α and seed also give the α trade-off below)", default_count=6,
                       empty="No run with a finished round yet. Launch the demo from **Train**.", key="robustness_runs")
chosen = list(by_id)

results = run_results([ui.store().get(i) for i in chosen], "robustness", key="robustness")
results = {i: results[i] for i in chosen if i in results}  # the picked order
configs = {i: c for i in results if (c := ui.run_config(i)) is not None}
results = {i: r for i, r in results.items() if i in configs}
if not results:
    st.stop()

detail = st.selectbox("Per-corruption curves of", list(results), format_func=lambda i: ui.run_label(by_id[i]),
                      key="robustness_detail")
method = configs[detail].method
curves = corruption_curves(results[detail], method=method)
ui.chart(curves, key="rob-curves")
ui.download_figure(curves, f"{detail}-corruptions", key="dl-rob-curves", caption=ui.run_caption(detail))

table = pd.DataFrame([{"run": run_id, "model": round_name(r.round, configs[run_id].method), "clean": r.clean,
                       **{n.replace("_", " "): sum(r.accuracy[n]) / len(r.accuracy[n]) for n in CORRUPTIONS},
                       "mean corrupted": r.mean_corrupted,
                       "kept under corruption (%)": 100 * r.mean_corrupted / r.clean}
                      for run_id, rs in results.items() for r in rs])
st.caption("Test accuracy (%) on the clean test split and averaged over the 5 severities of each corruption.")
st.dataframe(table.style.format(precision=2), hide_index=True, width="stretch")
c1, c2 = st.columns(2)
with c1:
    ui.download_csv(table.to_csv(index=False), "robustness", key="dl-rob-csv")
with c2:
    st.download_button("Download all numbers (JSON)",
                       json.dumps({run_id: [asdict(r) for r in rs] for run_id, rs in results.items()}),
                       file_name="robustness.json", mime="application/json", on_click="ignore",
                       icon=":material/download:")

left, right = st.columns(2)
with left:
    st.subheader("In distribution vs out of distribution")
    scatter = id_vs_ood([(config_label(configs[run_id]), run_id, r.round, r.clean, r.mean_corrupted,
                          configs[run_id].method) for run_id, rs in results.items() for r in rs])
    ui.chart(scatter, key="rob-scatter")
    ui.download_figure(scatter, "id-vs-ood", key="dl-rob-scatter", caption="runs " + ", ".join(results))
with right:
    st.subheader("The α trade-off")
    tradeoffs = alpha_tradeoff([(configs[i], results[i]) for i in results])
    if tradeoffs:
        t = max(tradeoffs, key=lambda c: len(c.seeds))
        st.caption(f"{ui.plain(t.label)} — runs per α: " + ", ".join(f"{a:g}: {n}" for a, n in t.seeds.items()))
        fig = alpha_figure(t.curves, method=t.method)
        ui.chart(fig, key="rob-alpha")
        ui.download_figure(fig, "alpha-tradeoff", key="dl-rob-alpha", caption=f"α trade-off · {t.label}")
    else:
        st.info("Select runs that differ only in α (and seed) to see how the weight on the hard labels trades "
                "clean accuracy against robustness — e.g. the demo with `--set alpha=0.5` and `alpha=0.8`.")

first_id = next(iter(results))
first = results[first_id]
verdict = ""
if len(first) > 1 and terms.is_multi_round(configs[first_id]):
    t, s = first[0], first[1]
    verdict = (f"\n\n**This run:** under corruption the teacher keeps {100 * t.mean_corrupted / t.clean:.1f}% of its "
               f"clean accuracy, student 1 {100 * s.mean_corrupted / s.clean:.1f}%.")
ui.explain(
    "Each round's kept model is evaluated on the clean test split and on 25 corrupted copies of it — Gaussian "
    "noise, Gaussian blur, lower contrast, brighter images and pixelation, five severities each (CIFAR-10-C's "
    "families, computed here, seeded, so every model sees the same images). The curves show how accuracy falls "
    "with severity; the scatter puts each model's clean (in-distribution) accuracy against its mean corrupted "
    "(out-of-distribution) accuracy. Pham et al. (Sec. 7) find that students inherit their teacher's robustness, "
    "most when the teacher's logits weigh more in the loss (smaller α) — the α trade-off plot asks that of your "
    "runs." + verdict)
