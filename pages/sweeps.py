"""Sweeps: one config over a grid of values (e.g. α × seeds), each setting its own run, in parallel on Ray;
then follow the trials (stop, continue). The config comes from the Train page's form, or a preset."""
from __future__ import annotations

import time

import streamlit as st

from app import ui
from sdcore import slurm
from sdcore import sweep as sw
from sdcore.analysis.compare import config_summary
from sdcore.config import PRESETS, RunConfig, preset
from sdcore.runs import RunError

RAY, SLURM = "Ray", "SLURM (submitit)"
TRAIN_FORM = "train"  # the "Config" option for the Train page's form; its config is session state "train.config"

# Streamlit forgets the value of a widget that a run does not draw: keep the Train page's form (its widget keys
# and the preset it started from) while this page is open, so "Edit it on Train" finds the form as it was left.
for key in [k for k in st.session_state if isinstance(k, str) and (k.startswith(("cfg.", "terms.")) or k == "preset")]:
    st.session_state[key] = st.session_state[key]


def ray_address() -> str | None:
    return st.session_state.get("sweep.address", "").strip() or None


def on_slurm() -> bool:
    return st.session_state.get("sweep.backend") == SLURM


def slurm_options() -> slurm.SlurmOptions:
    return slurm.SlurmOptions.build(time=st.session_state["sweep.time"], partition=st.session_state["sweep.partition"]
                                    .strip() or None, gpus_per_trial=st.session_state["sweep.gpus"],
                                    cpus_per_trial=st.session_state["sweep.slurm_cpus"])


def launch_sweep(spec: sw.SweepSpec, where) -> None:
    """Open the sweep (the same settings and grid continue an existing one), then start its Ray driver in its own
    process, or submit its trials to SLURM (sbatch returns at once; nothing here has to keep running)."""
    with ui.shown_errors(where, stop=False):
        sweep, continuing = sw.open_sweep(ui.store(), spec, check_data=ray_address() is None and not on_slurm())
        if sweep.is_live():
            raise RunError(f"sweep {sweep.id} is already running")
        if on_slurm():
            slurm.submit(ui.store(), sweep, slurm_options())
        else:
            start_driver(sweep)
        st.session_state["sweep_id"] = sweep.id
        st.session_state["sweep_note"] = (f"Continuing sweep {ui.code(sweep.id)}: it has the same settings and "
                                          "grid; finished trials are kept." if continuing else "")


def start_driver(sweep: sw.Sweep) -> None:
    sw.launch_detached(ui.store().root, sweep, address=ray_address())
    st.session_state["sweep_started"] = time.time()


def grid_lines() -> list[str]:
    return [line.strip() for line in st.session_state["sweep.grid"].splitlines() if line.strip()]


def base_config() -> RunConfig | None:
    """The config every trial starts from: the Train page's form (when this session filled one) or a preset;
    None, with the reason shown, when the form does not validate."""
    choices = ([TRAIN_FORM] if "train.config" in st.session_state else []) + list(PRESETS)
    choice = st.selectbox("Config", choices, key="sweep.base",
                          format_func=lambda c: "the form on Train" if c == TRAIN_FORM else f"preset {c}",
                          help="Every trial is a normal run of this config with its grid values. Change any field "
                               "on Train, then come back: the form's config is the first choice.")
    cfg = st.session_state["train.config"] if choice == TRAIN_FORM else preset(choice)
    if cfg is None:
        st.error("The form on **Train** does not validate yet: fix the error shown there.", icon=":material/error:")
    else:
        st.caption(ui.plain(config_summary(cfg)))
    st.page_link(ui.pages()["train"], label="Edit it on Train", icon=":material/model_training:")
    return cfg


def sweep_form() -> None:
    """The grid, the resources, and Launch."""
    cfg = base_config()
    st.session_state.setdefault("sweep.grid", "alpha=0.2,0.5,0.8\nseed=0,1,2")
    st.text_area("Grid", key="sweep.grid", height=90,
                 help="One field per line, key=v1,v2,… (any config field, as in `--set`). Every "
                      "combination is a trial: a normal run of the config above with those values.")
    backends = ([RAY] if sw.ray_available() else []) + ([SLURM] if slurm.submitit_available() else [])
    st.radio("Run on", backends, key="sweep.backend", horizontal=True,
             help="Ray: trials as tasks on this machine or a Ray cluster, while a driver process runs. SLURM: one "
                  "job array task per trial through submitit (from a cluster's login node); nothing here has to "
                  "keep running, and a trial stopped by its time limit is requeued and continues.")
    if on_slurm():
        c1, c2, c3, c4 = st.columns(4)
        c1.number_input("CPUs per trial", 1, 64, 1, key="sweep.slurm_cpus")
        c2.number_input("GPUs per trial", 0, 8, 1, key="sweep.gpus")
        c3.text_input("Time limit", "60", key="sweep.time", help="Per trial: minutes or [days-]hours:minutes:seconds.")
        c4.text_input("Partition", key="sweep.partition", placeholder="the cluster's default")
    else:
        c1, c2 = st.columns(2)
        c1.number_input("CPUs per trial", 0.5, 64.0, 1.0, step=0.5, key="sweep.cpus",
                        help="Ray runs as many trials at once as the CPUs allow; on a GPU node each trial "
                             "takes one GPU.")
        c2.text_input("Ray address", key="sweep.address", placeholder="blank: this machine",
                      help="A cluster's Ray Client address, e.g. ray://head:10001. The runs folder must be "
                           "shared by every node at the same path.")
    sweep_box = st.container()
    spec = None
    if cfg is not None:
        with ui.shown_errors(sweep_box, stop=False):
            cpus = st.session_state["sweep.slurm_cpus" if on_slurm() else "sweep.cpus"]
            built = sw.SweepSpec.build(cfg, grid_lines(), cpus_per_trial=float(cpus))
            if on_slurm():
                slurm_options()  # a bad time limit is shown, and blocks Launch
            spec = built
    if st.button(f"Launch sweep ({len(spec.trials())} trials)" if spec else "Launch sweep",
                 type="primary", disabled=spec is None, icon=":material/grid_on:", width="stretch"):
        launch_sweep(spec, sweep_box)


def sweep_panel() -> None:
    """The chosen sweep's trials, refreshed every second while its driver runs."""
    sweeps = {s.id: s for s in sw.list_sweeps(ui.store())}
    if not sweeps:
        return
    st.subheader("Sweeps")
    if st.session_state.get("sweep_id") not in sweeps:
        st.session_state["sweep_id"] = list(sweeps)[-1]
    st.selectbox("Sweep", list(sweeps)[::-1], key="sweep_id")
    sweep = sweeps[st.session_state["sweep_id"]]
    if st.session_state.get("sweep_note"):
        st.info(st.session_state.pop("sweep_note"), icon=":material/replay:")

    def starting() -> bool:  # the driver takes a moment to start and take the sweep's lock
        return time.time() - st.session_state.get("sweep_started", 0.0) < 20

    submitted = slurm.options_of(sweep)  # a SLURM sweep: its trials' jobs, not a driver, are what runs
    try:  # the trials are read here only for a SLURM sweep (they say whether its jobs still run)
        following = sweep.is_live() or starting() or (
            submitted is not None and slurm.activity(sweep, sw.trial_states(ui.store(), sweep)) is not None)
    except RunError:
        following = False

    @st.fragment(run_every=1.0 if following else None)
    def render() -> None:
        try:
            spec, states = sweep.spec(), sw.trial_states(ui.store(), sweep)
        except RunError as e:
            st.error(ui.plain(e), icon=":material/error:")
            return
        jobs = slurm.activity(sweep, states) if submitted is not None else None
        live = sweep.is_live() or jobs is not None
        if following and not live and not starting():
            st.rerun()  # the driver ended: redraw the page once, with polling off
        grid = "  ×  ".join(f"{ui.code(k)} = {ui.plain(', '.join(v))}" for k, v in spec.grid)
        st.markdown(f"**{ui.plain(spec.base.name)}** over {grid} — {sw.describe(states)}"
                    + (f" — **running{' ' + jobs if jobs else ''}**" if live else ""))
        st.progress(sw.overall(states))
        st.dataframe(sw.trial_rows(states), hide_index=True, width="stretch",
                     column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)})
        c1, c2 = st.columns(2)
        if live:
            if c1.button("Stop the sweep", icon=":material/stop:", key="sweep.stop",
                         help="Cancels the running trials (their last epoch is kept); Continue picks them up."):
                if submitted is not None:
                    with ui.shown_errors(c1, stop=False):
                        cancelled = slurm.cancel(ui.store(), sweep)
                        st.toast(f"Cancelled {len(cancelled)} job(s)." if cancelled else "No job of this sweep "
                                 "is known to the scheduler here.")
                elif not sw.stop(sweep):
                    st.warning("This sweep's driver runs on another machine: stop it there (Ctrl-C).")
        elif any(s.state != "done" for s in states):
            if c1.button("Continue the sweep", icon=":material/play_arrow:", key="sweep.continue",
                         help="Runs the trials not done yet (a SLURM sweep: submitted again with its own "
                              "settings; else on the Ray address above, if any); finished ones are kept."):
                if submitted is not None:
                    with ui.shown_errors(c1, stop=False):
                        slurm.submit(ui.store(), sweep, submitted)
                        st.rerun()
                else:
                    start_driver(sweep)
                    st.rerun()
        if any(s.state == "done" for s in states):
            c2.page_link(ui.pages()["compare"], label="Compare the trials (mean ± std over seeds)",
                         icon=":material/compare_arrows:")
            with c2:
                ui.download_report(sweep, sweep.id, key="sweep.report", sweep=True)
        log = sweep.log_path()
        if log.exists() and log.stat().st_size:
            with st.expander("Driver output"):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-40:]), language=None)

    render()


# ---------------------------------------------------------------- page
st.title("Sweeps: one config over a grid of values")
ui.explain(
    "A sweep runs every combination of a grid (e.g. α × seeds) as its own run — a *trial* — in parallel on Ray, "
    "on this machine or a cluster, or as a SLURM job array. Each trial is a normal run folder, so **Live**, "
    "**Compare** and the analysis pages show it like any other; **Compare** pools trials that differ only by "
    "seed into mean ± std. Stopping keeps every trial's last finished epoch; Continue (or launching the same "
    "config and grid again) finishes the rest, and finished trials are kept. The command line does the same: "
    "`python -m sdcore sweep` (`--backend slurm` for SLURM).")
if not sw.ray_available() and not slurm.submitit_available():
    st.markdown("Sweeps run each setting of a grid (e.g. α × seeds) as its own run, in parallel, on Ray — "
                "on this machine or a cluster. Ray is not installed here: "
                "`.venv/bin/pip install -r requirements-sweep.txt`, then reload.")
else:
    sweep_form()
sweep_panel()
