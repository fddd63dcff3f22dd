"""Robustness: accuracy of every round under corruptions of the test split (sdlab's synthetic ones, or the official
CIFAR-10-C / CIFAR-100-C files for runs on CIFAR), ID vs OOD, and the α trade-off."""
from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd
import streamlit as st

from app import ui
from app.ui.analyses import run_results
from sdcore import terms
from sdcore.analysis.compare import config_label
from sdcore.analysis.robustness import (
    CIFAR_C,
    CIFAR_C_EXTRA,
    CIFAR_C_FOLDERS,
    CORRUPTIONS,
    NOT_IMAGES,
    RobustnessSettings,
    alpha_tradeoff,
    cifar_c_folder,
)
from sdcore.plots import alpha_tradeoff as alpha_figure
from sdcore.plots import corruption_curves, corruption_errors, id_vs_ood, mce_by_round, round_name

SOURCES = {"synthetic": "sdlab's synthetic corruptions (any dataset)",
           "cifar-c": "the official CIFAR-10-C / CIFAR-100-C files (Hendrycks & Dietterich)"}

st.title("Robustness: does distillation carry off-distribution?")
by_id = ui.runs_picker("Runs (runs that differ only in α and seed also give the α trade-off below)", default_count=6,
                       empty="No run with a finished round yet. Launch the demo from **Train**.", key="robustness_runs")
chosen = list(by_id)
picked = {i: c for i in chosen if (c := ui.run_config(i)) is not None}
on_cifar = [i for i, c in picked.items() if c.data.name in CIFAR_C_FOLDERS]

settings = RobustnessSettings()
if on_cifar:
    source = st.radio("Corruptions", list(SOURCES), format_func=SOURCES.get, horizontal=True, key="robustness_source",
                      help="The official files give the mean corruption error (mCE) published CIFAR results report; "
                           "the synthetic ones are computed here for every dataset.")
    if source == "cifar-c":
        root = st.text_input("Folder holding CIFAR-10-C/ or CIFAR-100-C/", key="robustness_cifar_c_root",
                             placeholder="empty: each run's data.root").strip() or None
        with ui.shown_errors():
            settings = RobustnessSettings(source="cifar-c", root=root).validate()
        folders: dict = {}  # the folder each run reads (names only, no file opened): runs sharing one share a line
        for i in on_cifar:
            found = cifar_c_folder(picked[i], settings)
            folders.setdefault(found.path, (found, []))[1].append(i)
        ready = []
        for found, ids in folders.values():
            line = found.problem()
            if line is None:
                ready += ids
                st.caption(f"Reading {ui.plain(found.describe())}.")
            else:
                st.error(f"{ui.plain(line)} (runs {', '.join(ui.code(i) for i in ids)})", icon=":material/error:")
        other = [i for i in chosen if i not in on_cifar]
        if other:
            st.caption("Left out (not trained on cifar10 / cifar100): " + ", ".join(ui.code(i) for i in other))
        chosen = [i for i in chosen if i in ready]
        if not chosen:
            st.stop()

signals = [i for i in chosen if i in picked and picked[i].data.name in NOT_IMAGES]
if signals:  # the corruptions act on pixels in [0, 1]: a 40-point MNIST-1D signal has neither
    st.caption("Left out (MNIST-1D signals are not images, the corruptions do not apply): "
               + ", ".join(ui.code(i) for i in signals))
    chosen = [i for i in chosen if i not in signals]
cifar_c = settings.source == "cifar-c"
results = run_results([ui.store().get(i) for i in chosen], "robustness", settings,
                      key="robustness-cifar-c" if cifar_c else "robustness")
results = {i: results[i] for i in chosen if i in results}  # the picked order
configs = {i: c for i in results if (c := ui.run_config(i)) is not None}
results = {i: r for i, r in results.items() if i in configs}
if not results:
    st.stop()

detail = st.selectbox("Per-corruption results of", list(results), format_func=lambda i: ui.run_label(by_id[i]),
                      key="robustness_detail")
method = configs[detail].method
if cifar_c:
    curves = corruption_errors(results[detail], method=method, extra=CIFAR_C_EXTRA)
    st.caption("Test error (%) per corruption, averaged over its 5 severities; * = one of the 4 extra files, "
               "outside the mCE.")
else:
    curves = corruption_curves(results[detail], method=method)
ui.chart(curves, key="rob-curves", name=f"{detail}-corruptions")
ui.download_figure(curves, f"{detail}-corruptions", key="dl-rob-curves", caption=ui.run_caption(detail))
for run_id, rs in results.items():
    for line in dict.fromkeys(v for r in rs for v in r.problems.values()):
        st.warning(f"{ui.code(run_id)}: left out — {ui.plain(line)}", icon=":material/warning:")

if cifar_c:
    st.subheader("Mean corruption error per round")
    mce = mce_by_round([(ui.chart_text(f"{config_label(configs[i])} · {i[:15]}"), configs[i].method, rs)
                        for i, rs in results.items()])
    ui.chart(mce, key="rob-mce", name="mce-per-round")
    ui.download_figure(mce, "mce-per-round", key="dl-rob-mce", caption="runs " + ", ".join(results))
    table = pd.DataFrame([{"run": run_id, "model": round_name(r.round, configs[run_id].method),
                           "clean error": 100 - r.clean, "mCE": r.mce, "relative mCE": r.relative_mce,
                           "all 15 read": r.complete,
                           **{n.replace("_", " ") + (" *" if n in CIFAR_C_EXTRA else ""): r.errors.get(n)
                              for n in CIFAR_C + CIFAR_C_EXTRA}}
                          for run_id, rs in results.items() for r in rs])
    st.caption("Test error (%): clean, the unnormalized mean corruption error over the 15 corruptions (mCE, as "
               "CIFAR-C results report it), mCE minus the clean error (relative mCE), and each corruption's error "
               "averaged over its 5 severities.")
else:
    table = pd.DataFrame([{"run": run_id, "model": round_name(r.round, configs[run_id].method), "clean": r.clean,
                           **{n.replace("_", " "): sum(r.accuracy[n]) / len(r.accuracy[n]) for n in CORRUPTIONS},
                           "mean corrupted": r.mean_corrupted,
                           "kept under corruption (%)": 100 * r.mean_corrupted / r.clean}
                          for run_id, rs in results.items() for r in rs])
    st.caption("Test accuracy (%) on the clean test split and averaged over the 5 severities of each corruption.")
st.dataframe(table.style.format(precision=2), hide_index=True, width="stretch")
c1, c2 = st.columns(2)
with c1:
    ui.download_csv(table.to_csv(index=False), "robustness-cifar-c" if cifar_c else "robustness", key="dl-rob-csv")
with c2:
    st.download_button("Download all numbers (JSON)",
                       json.dumps({run_id: [asdict(r) for r in rs] for run_id, rs in results.items()}),
                       file_name="robustness-cifar-c.json" if cifar_c else "robustness.json", mime="application/json",
                       on_click="ignore", icon=":material/download:")

left, right = st.columns(2)
with left:
    st.subheader("In distribution vs out of distribution")
    scatter = id_vs_ood([(config_label(configs[run_id]), run_id, r.round, r.clean, r.mean_corrupted,
                          configs[run_id].method) for run_id, rs in results.items() for r in rs])
    ui.chart(scatter, key="rob-scatter", name="id-vs-ood")
    ui.download_figure(scatter, "id-vs-ood", key="dl-rob-scatter", caption="runs " + ", ".join(results))
with right:
    st.subheader("The α trade-off")
    tradeoffs = alpha_tradeoff([(configs[i], results[i]) for i in results])
    if tradeoffs:
        t = max(tradeoffs, key=lambda c: len(c.seeds))
        st.caption(f"{ui.plain(t.label)} — runs per α: " + ", ".join(f"{a:g}: {n}" for a, n in t.seeds.items()))
        fig = alpha_figure(t.curves, method=t.method)
        ui.chart(fig, key="rob-alpha", name="alpha-tradeoff")
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
if cifar_c:
    ui.explain(
        "Each round's kept model is scored on Hendrycks & Dietterich's released CIFAR-10-C (or CIFAR-100-C) files: "
        "the test set under 15 corruptions (noise, blur, weather, digital) at 5 severities each, plus 4 extra "
        "corruptions the authors released for validation (starred, outside the mean). The mCE is the mean test "
        "error over the 15 corruptions and 5 severities, unnormalized, the number CIFAR-C results report (AugMix, "
        "Hendrycks et al. 2020); the relative mCE subtracts the clean error, what corruption costs beyond it. "
        "Lower is better for both. In the scatter, the out-of-distribution accuracy is 100 − mCE. Download the "
        "files from zenodo (records 2535967 and 3555552) and extract them in the run's data root." + verdict)
else:
    ui.explain(
        "Each round's kept model is evaluated on the clean test split and on 25 corrupted copies of it — Gaussian "
        "noise, Gaussian blur, lower contrast, brighter images and pixelation, five severities each (CIFAR-10-C's "
        "families, computed here, seeded, so every model sees the same images). The curves show how accuracy "
        "falls with severity; the scatter puts each model's clean (in-distribution) accuracy against its mean "
        "corrupted (out-of-distribution) accuracy. Pham et al. (Sec. 7) find that students inherit their "
        "teacher's robustness, most when the teacher's logits weigh more in the loss (smaller α) — the α "
        "trade-off plot asks that of your runs." + verdict)
