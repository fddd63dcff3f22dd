"""Paper tables: the numbers each paper reports for a preset, beside your runs of that preset."""
from __future__ import annotations

import statistics

import pandas as pd
import streamlit as st

from app import ui
from app.ui.analyses import run_results
from sdcore.config import ConfigError, preset
from sdcore.paper import PAPER, differences, needs_calibration, run_columns
from sdcore.runs import RunError

st.title("Paper tables: your runs beside the papers' numbers")
st.caption("Each preset below mirrors a table of one of the papers sdlab is built from. Train it (it needs the "
           "dataset in data.root and a GPU for hours), then its runs appear here next to the published numbers.")

names = [n for n in PAPER if n != "pham-cifar10-resnet18"]  # the alias shares a-0.5's row
choice = st.selectbox("Preset", names, format_func=lambda n: f"{n} — {PAPER[n].source}", key="paper_preset")
numbers = PAPER[choice]
reference = preset(choice)

found = []  # (run, config) of every run of the preset
for info in ui.run_infos():
    if info.rounds_done == 0 or info.status == "unreadable":
        continue
    try:
        run = ui.store().get(info.id)
        cfg = run.config()
    except (ConfigError, RunError):
        continue
    if cfg.name != choice and cfg.name != reference.name and differences(cfg, reference):
        continue  # neither named after the preset nor trained with its settings
    found.append((run, cfg))
# The deepest output's calibration, where the paper reports it: computed in the background, shown when ready.
calibrations = run_results([r for r, _ in found], "calibration", key="papers") if needs_calibration(numbers) else {}
matches = []
for run, cfg in found:
    diff = differences(cfg, reference)
    matches.append((run.id, run_columns(numbers, cfg, run.summary(), calibrations.get(run.id), run.metrics()),
                    "yes" if not diff else "differs in " + ", ".join(diff)))

columns = [c for c, _ in numbers.columns]
rows = [{"source": "paper", **{c: (f"{v[0]:.2f} ± {v[1]:.2f}" if v[1] is not None else f"{v[0]:.2f}")
                               for c, v in numbers.columns}, "preset settings": "—"}]
for run_id, values, same in matches:
    rows.append({"source": run_id, **{c: (None if values[c] is None else f"{values[c]:.2f}") for c in columns},
                 "preset settings": same})
same = [values for _, values, s in matches if s == "yes"]
if len(same) > 1:
    rows.append({"source": f"your runs with the preset's settings: mean ± std of {len(same)}",
                 **{c: (f"{statistics.fmean(v):.2f} ± {statistics.stdev(v):.2f}"
                        if len(v := [x[c] for x in same if x[c] is not None]) > 1 else None) for c in columns},
                 "preset settings": "yes"})
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, width="stretch")
ui.download_csv(table.to_csv(index=False), f"paper-{choice}", key="dl-paper")
if not matches:
    st.info(f"No run of `{choice}` yet. Launch it from **Train** (pick the preset) or with "
            f"`python -m sdcore train --preset {choice}` — about {numbers.gpu_hours:g} GPU-hours (estimate).")
    ui.preset_button(choice)
st.caption(numbers.note)

ui.explain(
    "The first row is the paper's (mean ± std over its runs where it reports them). Every run trained from "
    "this preset — or named after it — follows, with a note when its settings differ from the preset's (for "
    "instance fewer epochs for a quick look), and with several runs of the exact settings their mean ± std. "
    "Accuracies are test accuracies in %, of the model each round kept; errors, NLL, ECE and AURC are of the "
    "deepest output on the test split, with PS-KD's conventions; time per epoch is the run's mean training time "
    "per epoch on its own hardware. The GPU-hour figures are estimates (typical epoch times of these networks, or "
    "the paper's time per epoch × epochs), not sdlab measurements.")
