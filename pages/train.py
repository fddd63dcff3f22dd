"""Train: pick a preset, adjust every knob, see the loss you are about to optimize, launch."""
from __future__ import annotations

import time

import streamlit as st
import torch

from app import ui
from sdcore import sweep as sw
from sdcore.config import (DATASETS, METHODS, OPTIMIZERS, PRESETS, SCHEDULES, SELECTIONS, ConfigError, RunConfig,
                           preset)
from sdcore.data import AUGMENT_POLICIES, DataError, check_available
from sdcore.models import list_models
from sdcore.runs import RunError

K = "cfg."  # widget keys are "cfg." + the dotted config field


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def load_preset() -> None:
    """Fill every widget from the chosen preset (on first visit and when the preset changes)."""
    values = flat(preset(st.session_state["preset"]).to_dict())
    values["data.subset"] = values["data.subset"] or 0
    values["optim.step_milestones"] = ", ".join(str(m) for m in values["optim.step_milestones"])
    for k, v in values.items():
        st.session_state[K + k] = v


def method_changed() -> None:
    """Keep the fields a method dictates in step: BYOT needs exits, only KD has rounds after the teacher."""
    method = st.session_state[K + "method"]
    st.session_state[K + "model.exits"] = method == "byot"
    st.session_state[K + "model.peers"] = 2 if method == "dml" else 1
    if method != "kd":
        st.session_state[K + "model.teachers"] = 1
    if method != "kd":
        st.session_state[K + "rounds"] = 0
    elif st.session_state[K + "rounds"] == 0:
        st.session_state[K + "rounds"] = 2


def augment_changed() -> None:
    """Augmentation off: the policy falls back to plain crop + flip (it only says how to augment)."""
    if not st.session_state[K + "data.augment"]:
        st.session_state[K + "data.augment_policy"] = "crop_flip"


def form_config() -> RunConfig:
    """The config the widgets describe (not yet validated)."""
    d: dict = {}
    for key, v in st.session_state.items():
        if isinstance(key, str) and key.startswith(K):
            *parents, leaf = key[len(K):].split(".")
            node = d
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = v
    d["data"]["subset"] = d["data"]["subset"] or None
    ms = d["optim"]["step_milestones"]
    try:
        d["optim"]["step_milestones"] = tuple(float(x) for x in str(ms).replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"optim.step_milestones must be numbers like 0.5, 0.75, got {ms!r}") from None
    return RunConfig.from_dict(d)


def launch(cfg: RunConfig, where) -> None:
    try:
        handle = ui.manager().submit(cfg)
    except (ConfigError, DataError, RunError) as e:
        where.error(str(e), icon=":material/error:")
        return
    st.session_state["live_run"] = handle.run_id
    ui.go_to("live")


def ray_address() -> str | None:
    return st.session_state.get("sweep.address", "").strip() or None


def launch_sweep(spec: sw.SweepSpec, where) -> None:
    """Open the sweep (the same settings and grid continue an existing one), start its driver in its own process."""
    try:
        sweep, continuing = sw.open_sweep(ui.store(), spec, check_data=ray_address() is None)
        if sweep.is_live():
            raise RunError(f"sweep {sweep.id} is already running")
        start_driver(sweep)
    except (DataError, RunError) as e:
        where.error(str(e), icon=":material/error:")
        return
    st.session_state["sweep_id"] = sweep.id
    st.session_state["sweep_note"] = (f"Continuing sweep `{sweep.id}`: it has the same settings and grid; "
                                      "finished trials are kept." if continuing else "")


def start_driver(sweep: sw.Sweep) -> None:
    sw.launch_detached(ui.store().root, sweep, address=ray_address())
    st.session_state["sweep_started"] = time.time()


def grid_lines() -> list[str]:
    return [line.strip() for line in st.session_state["sweep.grid"].splitlines() if line.strip()]


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

    following = sweep.is_live() or starting()

    @st.fragment(run_every=1.0 if following else None)
    def render() -> None:
        try:
            spec, states = sweep.spec(), sw.trial_states(ui.store(), sweep)
        except RunError as e:
            st.error(str(e), icon=":material/error:")
            return
        live = sweep.is_live()
        if following and not live and not starting():
            st.rerun()  # the driver ended: redraw the page once, with polling off
        grid = "  ×  ".join(f"`{k}` = {', '.join(v)}" for k, v in spec.grid)
        st.markdown(f"**{spec.base.name}** over {grid} — {sw.describe(states)}"
                    + (" — **running**" if live else ""))
        st.progress(sw.overall(states))
        st.dataframe(sw.trial_rows(states), hide_index=True, width="stretch",
                     column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)})
        c1, c2 = st.columns(2)
        if live:
            if c1.button("Stop the sweep", icon=":material/stop:", key="sweep.stop",
                         help="Cancels the running trials (their last epoch is kept); Continue picks them up."):
                if not sw.stop(sweep):
                    st.warning("This sweep's driver runs on another machine: stop it there (Ctrl-C).")
        elif any(s.state != "done" for s in states):
            if c1.button("Continue the sweep", icon=":material/play_arrow:", key="sweep.continue",
                         help="Runs the trials not done yet (on the Ray address above, if any); finished "
                              "ones are kept."):
                start_driver(sweep)
                st.rerun()
        if any(s.state == "done" for s in states):
            c2.page_link(ui.pages()["compare"], label="Compare the trials (mean ± std over seeds)",
                         icon=":material/compare_arrows:")
        log = sweep.log_path()
        if log.exists() and log.stat().st_size:
            with st.expander("Driver output"):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-40:]), language=None)

    render()


def formula(cfg: RunConfig) -> str:
    a, t = cfg.alpha, cfg.temperature
    # Two lines (aligned), so the formula fits the narrow right column.
    if cfg.method == "kd":
        return (rf"\begin{{aligned}}\mathcal{{L}}_{{\text{{student}}}} &= \underbrace{{{a:.2f}}}_{{\alpha}}\,"
                rf"\mathrm{{CE}}(y, p_s) \\ &+ \underbrace{{{1 - a:.2f}}}_{{1-\alpha}}\cdot"
                rf"\underbrace{{{t:g}^2}}_{{\tau^2}}\,\mathrm{{KL}}\big(p_t^{{\tau}} \,\|\, p_s^{{\tau}}\big)"
                rf"\end{{aligned}}")
    if cfg.method == "byot":
        return (rf"\begin{{aligned}}\mathcal{{L}} &= \mathrm{{CE}}(y, p_C) + \sum_{{i<C}} \Big[{a:.2f}\,"
                rf"\mathrm{{CE}}(y, p_i) \\ &+ {1 - a:.2f}\cdot {t:g}^2\,\mathrm{{KL}}\big(p_C^{{\tau}} \,\|\,"
                rf" p_i^{{\tau}}\big) + {cfg.hint_weight:g}\,\lVert F_i - F_C \rVert^2\Big]\end{{aligned}}")
    if cfg.method == "dml":
        return (rf"\begin{{aligned}}\mathcal{{L}}_i &= {a:.2f}\,\mathrm{{CE}}(y, p_i) \\ &+ {1 - a:.2f}\cdot {t:g}^2"
                rf"\,\tfrac{{1}}{{K-1}}\sum_{{j \ne i}} \mathrm{{KL}}\big(p_j^{{\tau}} \,\|\, p_i^{{\tau}}\big)"
                rf"\end{{aligned}}")
    return (rf"\begin{{aligned}}\mathcal{{L}} &= \mathrm{{CE}}\big((1-a_t)\,y + a_t\, p^{{(t-1)}},\ p\big) \\ "
            rf"a_t &= {1 - a:.2f}\cdot \tfrac{{t}}{{{cfg.epochs}}}\end{{aligned}}")


SECTION_OF = {"data": "data", "model": "model", "optim": "optim"}


def section_of(message: str) -> str:
    field = message.split(" ", 1)[0]
    return SECTION_OF.get(field.split(".", 1)[0], "method") if "." in field else \
        ("run" if field in ("name", "seed", "device", "select", "precision", "channels_last", "compile") else "method")


# ---------------------------------------------------------------- page
st.title("Train a teacher and its students")
if "preset" not in st.session_state:
    st.session_state["preset"] = "demo"
    load_preset()

if not ui.run_infos() and not ui.manager().active():
    with st.container(border=True):
        st.markdown("#### First time here?\nThe demo trains a small CNN on handwritten digits with 30% of the "
                    "training labels flipped, then two students that learn from it. It takes about 20 seconds "
                    "on a laptop CPU, and the students end up more accurate than their teacher.")
        if st.button("Run the demo", type="primary", icon=":material/play_arrow:"):
            launch(preset("demo"), st)

st.selectbox("Preset", list(PRESETS), key="preset", on_change=load_preset,
             help="Start from a preset; every field below can then be changed.")
st.caption(PRESETS[st.session_state["preset"]].description)

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Method")
    method_box = st.container()
    with method_box:
        st.segmented_control("Method", METHODS, key=K + "method", required=True, on_change=method_changed,
                             format_func={"kd": "multi-round KD", "byot": "BYOT (exits)", "pskd": "PS-KD",
                                          "dml": "mutual (DML)"}.get)
        c1, c2 = st.columns(2)
        c1.slider("α (hard-label weight)", 0.0, 1.0, step=0.05, key=K + "alpha",
                  help="Weight on the cross-entropy with the labels; 1 - α weighs the distillation term. "
                       "sdlab's α is always the hard-label weight.")
        c2.slider("τ (temperature)", 0.5, 20.0, step=0.5, key=K + "temperature",
                  help="Softens teacher and student outputs in the distillation term.")
        c1, c2, c3 = st.columns(3)
        method = st.session_state[K + "method"]
        c1.number_input("Students", 0, 20, step=1, key=K + "rounds",
                        disabled=method != "kd",
                        help="Rounds after the teacher (multi-round KD only): round k learns from round k-1. "
                             "BYOT and PS-KD train one network.")
        c2.number_input("Epochs per round", 1, 10000, step=1, key=K + "epochs")
        c3.number_input("β (BYOT hint)", 0.0, 10.0, step=0.01, format="%.3f", key=K + "hint_weight",
                        disabled=method != "byot", help="Weight of the feature hint ‖F_i − F_deepest‖² (BYOT only).")

    st.subheader("Data")
    data_box = st.container()
    with data_box:
        c1, c2 = st.columns(2)
        c1.selectbox("Dataset", DATASETS, key=K + "data.name")
        c2.text_input("Data folder (for downloaded datasets)", key=K + "data.root")
        c1, c2, c3 = st.columns(3)
        c1.slider("Label noise", 0.0, 0.9, step=0.05, key=K + "data.label_noise",
                  help="Share of training labels flipped to another class (validation and test stay clean). "
                       "The honest lever that makes distillation visible in accuracy.")
        c2.slider("Validation share", 0.0, 0.5, step=0.05, key=K + "data.val_fraction",
                  help="Held out from training to pick each round's best epoch (never the test split).")
        c3.number_input("Subset (0 = all)", 0, 10_000_000, step=100, key=K + "data.subset",
                        help="Train on this many examples only, for quick runs.")
        c1, c2, c3 = st.columns(3)
        c1.toggle("Augmentation", key=K + "data.augment", on_change=augment_changed,
                  help="Random crop, plus horizontal flip where it keeps the class; done on the device.")
        c2.selectbox("Policy", AUGMENT_POLICIES, key=K + "data.augment_policy",
                     disabled=not st.session_state[K + "data.augment"],
                     format_func={"crop_flip": "crop + flip", "autoaugment": "+ AutoAugment + Cutout"}.get,
                     help="Pham et al.'s 'data augmentation' rows add AutoAugment (CIFAR-10 policy) and Cutout "
                          "to crop + flip.")
        c3.toggle("Allow download", key=K + "data.download", help="Lets torchvision fetch the files (needs a network).")

    st.subheader("Model")
    model_box = st.container()
    with model_box:
        c1, c2 = st.columns(2)
        c1.selectbox("Architecture", list_models(), key=K + "model.arch")
        c2.number_input("Width multiplier", 0.125, 8.0, step=0.125, key=K + "model.width")
        c1.toggle("Skip connections", key=K + "model.skip", help="Off gives Li et al.'s no-skip ResNets.")
        c2.toggle("BYOT exits", key=K + "model.exits", disabled=True,
                  help="Set by the method: BYOT trains a network with exits, the other methods one without.")
        c1.number_input("Peers (DML)", 1, 8, step=1, key=K + "model.peers", disabled=method != "dml",
                        help="Deep mutual learning trains this many networks together; peer 1 is reported.")
        c2.number_input("Teachers (ensemble)", 1, 9, step=1, key=K + "model.teachers", disabled=method != "kd",
                        help="Round 0 trains this many networks independently; the mean of their logits teaches "
                             "student 1 (Pham et al. Fig. 3: more teachers, better student).")

    with st.expander("Optimizer and schedule"):
        optim_box = st.container()
        with optim_box:
            c1, c2, c3, c4 = st.columns(4)
            c1.selectbox("Optimizer", OPTIMIZERS, key=K + "optim.name")
            c2.number_input("Learning rate", 1e-6, 10.0, step=0.005, format="%.4f", key=K + "optim.lr")
            c3.number_input("Momentum", 0.0, 0.999, step=0.05, key=K + "optim.momentum")
            c4.toggle("Nesterov", key=K + "optim.nesterov")
            c1, c2, c3, c4 = st.columns(4)
            c1.number_input("Weight decay", 0.0, 1.0, step=1e-4, format="%.5f", key=K + "optim.weight_decay")
            c2.number_input("Batch size", 1, 65536, step=1, key=K + "optim.batch_size")
            c3.number_input("Gradient clip (0 = off)", 0.0, 1000.0, step=0.5, key=K + "optim.grad_clip")
            c4.number_input("Warm-up epochs", 0.0, 1000.0, step=1.0, key=K + "optim.warmup_epochs")
            c1, c2, c3, c4 = st.columns(4)
            c1.selectbox("Schedule", SCHEDULES, key=K + "optim.schedule")
            c2.text_input("Step milestones (fractions of the epochs)", key=K + "optim.step_milestones")
            c3.number_input("Step factor", 0.0, 1.0, step=0.05, key=K + "optim.step_gamma")
            c4.number_input("SAM radius ρ (empty = off)", 0.0, 10.0, step=0.01, format="%.3f", placeholder="off",
                            key=K + "optim.sam_rho",
                            help="Sharpness-aware minimization (Foret et al.): each step follows the gradient at "
                                 "the worst point within ρ of the weights, which seeks flat minima — Pham et al.'s "
                                 "baseline for students' flatness. 0.05 is Foret et al.'s CIFAR radius; twice "
                                 "the cost per step. Not with PS-KD.")

    st.subheader("Run")
    run_box = st.container()
    with run_box:
        c1, c2, c3, c4 = st.columns([1, 1, 1, 1.3])
        c1.text_input("Run name", key=K + "name")
        c2.number_input("Seed", 0, 2**31 - 1, step=1, key=K + "seed")
        devices = ["auto", "cpu", "cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())
                                             if torch.cuda.device_count() > 1]
        if st.session_state[K + "device"] not in devices:  # a config from another machine keeps its value
            devices.append(st.session_state[K + "device"])
        c3.selectbox("Device", devices, key=K + "device",
                     help="auto: the GPU when there is one, else the CPU. Validation says so if it is missing.")
        c4.selectbox("Keep per round", SELECTIONS, key=K + "select",
                     format_func={"best_val": "best val. epoch", "last": "last epoch"}.get)
        c1, c2, c3 = st.columns(3)
        c1.selectbox("Precision", ("fp32", "bf16"), key=K + "precision",
                     help="bf16: the training forward runs under bf16 autocast (weights stay fp32); fast on recent GPUs.")
        c2.toggle("channels_last", key=K + "channels_last", help="NHWC memory layout: faster convolutions on GPUs.")
        c3.toggle("torch.compile", key=K + "compile",
                  help="Compiles the model for training (the first steps take longer); falls back to eager if it fails.")
        st.caption(ui.device_caption())

boxes = {"method": method_box, "data": data_box, "model": model_box, "optim": optim_box, "run": run_box}
error = None
try:
    cfg = form_config().validate()
    check_available(cfg.data)
except ConfigError as e:
    cfg, error = None, str(e)
    boxes[section_of(error)].error(error, icon=":material/error:")
except DataError as e:
    cfg, error = None, str(e)
    data_box.error(error, icon=":material/folder_off:")

with right:
    st.subheader("The loss you will optimize")
    shown = cfg or preset(st.session_state["preset"]).replace(
        alpha=st.session_state[K + "alpha"], temperature=st.session_state[K + "temperature"])
    st.latex(formula(shown))
    if shown.method != "pskd":
        st.caption(rf"$p^\tau = \mathrm{{softmax}}(z/\tau)$: logits softened by the temperature "
                   rf"$\tau = {shown.temperature:g}$.")
    if shown.method == "kd":
        n = shown.model.teachers
        teacher = ("Round 0 (the **teacher**) trains on the labels alone." if n == 1 else
                   f"Round 0 trains **{n} teachers** on the labels, independently; the mean of their logits is "
                   "the teacher (Pham et al.'s ensemble as teacher).")
        st.markdown(f"{teacher} Then {shown.rounds} "
                    f"student{'s' if shown.rounds != 1 else ''} — same architecture, trained from scratch — "
                    "each learn from the previous round's softened outputs.")
    if shown.method == "dml":
        st.markdown(f"**{shown.model.peers} peers** — same architecture, different inits — train together: each "
                    "learns from the labels and from the other peers' current softened outputs. No teacher is "
                    "trained first; peer 1 is the model reported.")
    ui.explain(
        "Pham et al. (*Revisiting Self-Distillation*) train a teacher, then a student of the **same** "
        "architecture on a mix of the labels (weight α) and the teacher's temperature-softened outputs "
        "(weight 1 − α, scaled by τ² so gradients keep their size). The student usually beats its teacher "
        "(their Table 2), more rounds fluctuate rather than keep improving, and students sit in flatter minima. "
        "With noisy labels the effect is easy to see: the teacher's soft outputs put mass on the right class "
        "for many mislabelled images.")
    launch_box = st.container()
    if st.button("Launch", type="primary", disabled=cfg is None, icon=":material/rocket_launch:",
                 width="stretch"):
        launch(cfg, launch_box)
    if error:
        st.caption("Fix the error shown next to its field to launch.")

    with st.expander("Sweep: this config over a grid of values", icon=":material/grid_on:"):
        if not sw.ray_available():
            st.markdown("Sweeps run each setting of a grid (e.g. α × seeds) as its own run, in parallel, on Ray — "
                        "on this machine or a cluster. Ray is not installed here: "
                        "`.venv/bin/pip install -r requirements-sweep.txt`, then reload.")
        else:
            st.session_state.setdefault("sweep.grid", "alpha=0.2,0.5,0.8\nseed=0,1,2")
            st.text_area("Grid", key="sweep.grid", height=90,
                         help="One field per line, key=v1,v2,… (any config field, as in `--set`). Every "
                              "combination is a trial: a normal run of the config above with those values.")
            c1, c2 = st.columns(2)
            c1.number_input("CPUs per trial", 0.5, 64.0, 1.0, step=0.5, key="sweep.cpus",
                            help="Ray runs as many trials at once as the CPUs allow; on a GPU node each trial "
                                 "takes one GPU.")
            c2.text_input("Ray address", key="sweep.address", placeholder="blank: this machine",
                          help="A cluster's Ray Client address, e.g. ray://head:10001. The runs folder must be "
                               "shared by every node at the same path.")
            sweep_box = st.container()
            spec = None
            try:
                if cfg is not None:
                    spec = sw.SweepSpec.build(cfg, grid_lines(), cpus_per_trial=st.session_state["sweep.cpus"])
            except ConfigError as e:
                sweep_box.error(str(e), icon=":material/error:")
            if st.button(f"Launch sweep ({len(spec.trials())} trials)" if spec else "Launch sweep",
                         disabled=spec is None, icon=":material/grid_on:", width="stretch"):
                launch_sweep(spec, sweep_box)

sweep_panel()
