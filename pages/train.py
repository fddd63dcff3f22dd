"""Train: pick a preset, adjust every knob, see the loss you are about to optimize, launch."""
from __future__ import annotations

import streamlit as st
import torch

from app import ui
from sdcore import terms
from sdcore.config import DATASETS, OPTIMIZERS, PRESETS, SCHEDULES, SELECTIONS, ConfigError, RunConfig, preset
from sdcore.data import AUGMENT_POLICIES, DataError, check_available, size_warnings, train_split_size
from sdcore.models import list_models
from sdcore.terms import BYOT_STYLES, TERMS

K = "cfg."  # widget keys are "cfg." + the dotted config field
# The method is picked as a kind of training (an alone term of the registry, or one network) and, for
# one network, any of the combinable terms; cfg.method is derived from these widgets (T keys).
T = "terms."
ONE_NETWORK = "one network"
KINDS = [t for t, e in TERMS.items() if e.alone] + [ONE_NETWORK]
COMBINABLE = [t for t, e in TERMS.items() if not e.alone and t != "ce"]
ARCH, OWN_ARCH = "arch", "arch.own"  # the architecture's widgets (not cfg.*: form_config joins them into model.arch)
OWN_MODEL = "your own model…"


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def load_preset() -> None:
    """Fill every widget from the chosen preset (on first visit and when the preset changes)."""
    cfg = preset(st.session_state["preset"])
    values = flat(cfg.to_dict())
    values["data.subset"] = values["data.subset"] or 0
    values["optim.step_milestones"] = ", ".join(str(m) for m in values["optim.step_milestones"])
    values["model.exit_nodes"] = ", ".join(values["model.exit_nodes"])
    arch = values.pop("model.arch")  # two widgets: sdlab's architectures, or your own typed in
    st.session_state[ARCH] = arch if arch in list_models() else OWN_MODEL
    st.session_state[OWN_ARCH] = "" if arch in list_models() else arch
    values["model.teacher_weights"] = values["model.teacher_weights"] or ""
    for k, v in values.items():
        st.session_state[K + k] = v
    used = terms.terms_of(cfg)
    st.session_state[T + "kind"] = next((t for t in used if TERMS[t].alone), ONE_NETWORK)
    for t in COMBINABLE:
        st.session_state[T + t] = t in used


def kind_label(kind: str) -> str:
    if kind == ONE_NETWORK:
        return "one network"
    return TERMS[kind].short + (" (peers)" if TERMS[kind].peers else "")


def form_method() -> str:
    kind = st.session_state[T + "kind"]
    if kind != ONE_NETWORK:
        return kind
    return terms.method_name(tuple(t for t in COMBINABLE if st.session_state.get(T + t)))


def terms_changed() -> None:
    """Keep the fields the terms dictate in step (from the registry): the method string, the exits,
    the peers and teachers, and rounds (only a multi-round method has students)."""
    method = form_method()
    st.session_state[K + "method"] = method
    st.session_state[K + "model.exits"] = terms.needs_exits(method)
    if not terms.uses(method, "peers"):
        st.session_state[K + "model.peers"] = 1
    elif st.session_state[K + "model.peers"] == 1:
        st.session_state[K + "model.peers"] = 2
    if not terms.uses(method, "teachers"):
        st.session_state[K + "model.teachers"] = 1
    if not terms.is_multi_round(method):
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
    d["data"]["file"] = str(d["data"].get("file") or "").strip() or None
    ms = d["optim"]["step_milestones"]
    try:
        d["optim"]["step_milestones"] = tuple(float(x) for x in str(ms).replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"optim.step_milestones must be numbers like 0.5, 0.75, got {ms!r}",
                          field="optim.step_milestones") from None
    m = d["model"]
    m["arch"] = st.session_state[OWN_ARCH].strip() if st.session_state[ARCH] == OWN_MODEL else st.session_state[ARCH]
    m["exit_nodes"] = tuple(str(m["exit_nodes"]).replace(",", " ").split())
    m["teacher_weights"] = str(m["teacher_weights"]).strip() or None
    return RunConfig.from_dict(d)


def demo_estimate() -> None:
    """How long the demo's training should take on this machine now, from a step timed just now in the background
    (ui.run_estimate; BENCHMARKS.md, "The demo on a busy laptop", compares it with measured runs)."""
    measured, _ = ui.run_estimate(preset("demo"))

    @st.fragment(run_every=None if measured else 1.0)  # polls only while the step is being timed
    def caption() -> None:
        ready, est = ui.run_estimate(preset("demo"))
        if not ready:
            st.caption("Timing a training step on this machine to estimate how long the demo takes…")
        elif not measured:
            st.rerun()  # measured since the page was drawn: once more, without the polling
        elif est is not None:
            st.caption(f"Training takes at least {est.seconds:.0f} s on this machine: a bare training step measured "
                       f"just now ({1000 * est.step_s:.1f} ms) × {est.steps} steps, plus evaluation after each epoch; "
                       "checkpoints and other programs add to it (measured: 1.6–2.6× more, BENCHMARKS.md). Live "
                       "shows the time left from the run's own pace. The curvature answers follow.")
    caption()


SECTIONS = {"data": "data", "model": "model", "optim": "optim"}  # first part of a dotted field -> its box
RUN_FIELDS = ("name", "seed", "device", "select", "precision", "channels_last", "compile", "deterministic")
TITLES = {"method": "Method", "data": "Data", "model": "Model", "optim": "Optimizer and schedule", "run": "Run"}


def section_of(field: str | None) -> str:
    """The form box that holds a config field (ConfigError.field); the method's box when unknown."""
    if field is None:
        return "method"
    head = field.split(".", 1)[0]
    return SECTIONS.get(head) or ("run" if field in RUN_FIELDS else "method")


def field_widgets(where, fields: list[str], method: str) -> None:
    """Draw the method's fields (FIELD_WIDGETS keys) two to a row: α and τ, then students and epochs first,
    then the rest; the wide selectboxes one to a row."""
    sliders = [f for f in fields if f in ("alpha", "temperature")]
    for col, f in zip(where.columns(2) if sliders else (), sliders):
        FIELD_WIDGETS[f](col, method)
    rest = sorted((f for f in fields if f not in sliders and f not in WIDE),
                  key=lambda f: f not in ("rounds", "epochs"))
    for i in range(0, len(rest), 2):
        for col, f in zip(where.columns(2), rest[i:i + 2]):
            FIELD_WIDGETS[f](col, method)
    for f in fields:
        if f in WIDE:
            FIELD_WIDGETS[f](where, method)


def _alpha(w, method):
    w.slider("α (hard-label weight)", 0.0, 1.0, step=0.05, key=K + "alpha",
             help="Weight on the cross-entropy with the labels; 1 − α weighs the distillation term. "
                  "sdlab's α is always the hard-label weight.")


def _temperature(w, method):
    w.slider("τ (temperature)", 0.5, 20.0, step=0.5, key=K + "temperature",
             help="Softens teacher and student outputs in the distillation term.")


def _rounds(w, method):
    w.number_input("Students", step=1, key=K + "rounds",
                   help="Rounds after the teacher: round k learns from round k-1.")


def _epochs(w, method):
    w.number_input("Epochs per round", step=1, key=K + "epochs")
    w.checkbox("Track sharpness (λ_max) every epoch", key=K + "track_sharpness",
               help=f"After each epoch, {st.session_state[K + 'sharpness_steps']} Lanczos steps on "
                    f"{st.session_state[K + 'sharpness_subset']} training examples, started from the last epoch's "
                    "top eigenvector, log the Hessian's λ_max as `sharpness` (5 steps: within 4e-5 of the Hessian "
                    "page's on the same examples). Training itself is unchanged. Measured cost on the demo CNN, CPU, "
                    "5 steps on 256: an epoch takes ~2.1× as long (its 1,300 digits are tiny; the estimate's work is "
                    "fixed, so on a larger split it is a smaller share). BENCHMARKS.md, 'Sharpness during training'.")


def _hint(w, method):
    w.number_input("β (BYOT hint)", step=0.01, format="%g", key=K + "hint_weight",
                   help="Weight of the feature hint between each shallow exit and the deepest (its form is the "
                        "style's, see the loss below).")


def _style(w, method):
    w.selectbox("BYOT style (whose exit loss)", list(BYOT_STYLES), key=K + "byot_style",
                format_func=lambda s: BYOT_STYLES[s].label,
                help="; ".join(f"{s.name}: {s.source}" for s in BYOT_STYLES.values()))


def _pskd_alpha(w, method):
    w.number_input("PS-KD: hard-label weight at the end", step=0.05, key=K + "pskd_alpha",
                   placeholder=f"same as α ({st.session_state[K + 'alpha']:.2f})",
                   help="1 − PS-KD's α_T: the targets mix in last epoch's predictions with a weight growing "
                        "linearly to 1 − this. Empty: the α above.")


def _pskd_exits(w, method):
    w.toggle("PS-KD targets on every exit", key=K + "pskd_exits",
             disabled="byot" not in terms.parse_method(method),
             help="With BYOT: the shallow exits' cross-entropy uses PS-KD's soft targets too (seed paper 003).")


def _dmfl_weight(w, method):
    w.number_input("DMFL weight", step=0.1, format="%g", key=K + "dmfl_weight",
                   help="Weight on the symmetric KL between each exit's feature and the deepest's.")


def _dmfl_temperature(w, method):
    w.number_input("DMFL feature temperature", step=0.5, format="%g", key=K + "dmfl_temperature",
                   help="q_i = softmax(F_i / T) over the feature's channels.")


WIDE = ("byot_style",)  # long option labels: a row of their own
FIELD_WIDGETS = {"alpha": _alpha, "temperature": _temperature, "rounds": _rounds, "epochs": _epochs,
                 "hint_weight": _hint, "byot_style": _style, "pskd_alpha": _pskd_alpha, "pskd_exits": _pskd_exits,
                 "dmfl_weight": _dmfl_weight, "dmfl_temperature": _dmfl_temperature}
def method_fields(method: str) -> list[str]:
    """The fields the method's terms read, each once, in registry order; epochs (every method's) last."""
    return list(dict.fromkeys(f for t in terms.terms_of(method) for f in TERMS[t].fields)) + ["epochs"]


# ---------------------------------------------------------------- page
st.title("Train a teacher and its students")
if "preset" not in st.session_state:
    st.session_state["preset"] = "demo"
    load_preset()

if not ui.run_infos() and not ui.manager().active():
    with st.container(border=True):
        st.markdown("#### First time here?\nThe demo trains a small CNN on handwritten digits with 30% of the "
                    "training labels flipped, then two students that learn from it, and then measures how sharp "
                    "each one's minimum is. Are the students more accurate than their teacher, and flatter?")
        demo_estimate()
        if st.button("Run the demo", type="primary", icon=":material/play_arrow:"):
            ui.launch(preset("demo").replace(curvature=True))

st.selectbox("Preset", list(PRESETS), key="preset", on_change=load_preset,
             help="Start from a preset; every field below can then be changed.")
st.caption(PRESETS[st.session_state["preset"]].description)

# Streamlit forgets the value of a widget that a run does not draw: keep the hidden fields' values (a term's
# knobs while it is not picked) by writing them back before any widget is drawn.
for key in [k for k in st.session_state if isinstance(k, str) and k.startswith((K, T))]:
    st.session_state[key] = st.session_state[key]

top_left, about_box = st.columns([3, 2], gap="large")
with top_left:
    st.subheader("Method")
    method_box = st.container()
    with method_box:
        st.segmented_control("Method", KINDS, key=T + "kind", required=True, on_change=terms_changed,
                             format_func=kind_label,
                             help="Multi-round KD trains a teacher, then students that learn from the round before; "
                                  "DML trains peers together; one network trains alone on the terms you pick.")
        if st.session_state[T + "kind"] == ONE_NETWORK:
            for col, t in zip(st.columns(len(COMBINABLE)), COMBINABLE):
                col.checkbox(TERMS[t].short, key=T + t, on_change=terms_changed,
                             help=f"{TERMS[t].label}. {TERMS[t].source}.")
        method = st.session_state[K + "method"]
        st.caption(f"**{terms.label(method)}** (`method={method}`)"
                   + (" — tick terms above to add them to the cross-entropy on the labels."
                      if not terms.parse_method(method) else ""))
        field_widgets(method_box, method_fields(method), method)

loss_box = st.container()  # the loss, full width: a sum of several terms is wider than a column
left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Data")
    data_box = st.container()
    with data_box:
        c1, c2, c3 = st.columns([1, 2, 1])
        c1.selectbox("Dataset", DATASETS, key=K + "data.name")
        c2.text_input("Data folder (for downloaded datasets)", key=K + "data.root")
        c3.selectbox("Normalization", ("dataset", "imagenet"), key=K + "data.normalize",
                     format_func={"dataset": "the dataset's", "imagenet": "ImageNet's"}.get,
                     help="Per-channel mean and std the images are normalized with; seed paper 003 uses ImageNet's.")
        c1, c2, c3 = st.columns(3)
        c1.slider("Label noise", 0.0, 0.9, step=0.05, key=K + "data.label_noise",
                  help="Share of training labels flipped to another class (validation and test stay clean). "
                       "The honest lever that makes distillation visible in accuracy.")
        c2.slider("Validation share", 0.0, 0.5, step=0.05, key=K + "data.val_fraction",
                  help="Held out from training to pick each round's best epoch (never the test split).")
        c3.number_input("Subset (0 = all)", step=100, key=K + "data.subset",
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
        c1, c2 = st.columns([2, 1])
        dataset = st.session_state[K + "data.name"]
        c1.text_input("Data file (tensors: your own data)", key=K + "data.file", placeholder="my_data.npz",
                      disabled=dataset != "tensors",
                      help="A .npz (np.savez) or .pt (torch.save of a dict of tensors) with x_train, y_train, x_test, "
                           "y_test: uint8 or float images [N, C, H, W] or [N, H, W, C] ([N, H, W] gray, [N, L] "
                           "sequences), labels 0..C-1, optional class names in 'classes' (README, 'Your own data').")
        c2.number_input("Examples (mnist1d)", step=1000, key=K + "data.size", disabled=dataset != "mnist1d",
                        help="MNIST-1D (Greydanus 2020): 40-point signals of 10 digit templates, generated from its "
                             "published recipe and seed; 80% train, 20% test. 5000 is the published dataset.")

    st.subheader("Model")
    model_box = st.container()
    with model_box:
        c1, c2 = st.columns(2)
        c1.selectbox("Architecture", [*list_models(), OWN_MODEL], key=ARCH)
        if st.session_state[ARCH] == OWN_MODEL:
            c2.text_input("Your model", key=OWN_ARCH, placeholder="my_net.py:build",
                          help="my_net.py:build (a function called as build(num_classes=…, in_channels=…) that "
                               "returns an nn.Module), package.module:build, timm:<name> or torchvision:<name>. It is "
                               "checked on a probe batch of the data before training.")
        c2.number_input("Width multiplier", step=0.125, key=K + "model.width")
        c1.toggle("Skip connections", key=K + "model.skip", help="Off gives Li et al.'s no-skip ResNets.")
        c2.toggle("BYOT exits", key=K + "model.exits", disabled=True,
                  help="Set by the terms: BYOT and DMFL train a network with shallow exits, the others one without.")
        c1.number_input("Peers (DML)", step=1, key=K + "model.peers", disabled=not terms.uses(method, "peers"),
                        help="Deep mutual learning trains this many networks together; peer 1 is reported.")
        c2.number_input("Teachers (ensemble)", step=1, key=K + "model.teachers",
                        disabled=not terms.uses(method, "teachers"),
                        help="Round 0 trains this many networks independently; the mean of their logits teaches "
                             "student 1 (Pham et al. Fig. 3: more teachers, better student).")
        c1.text_input("Exit nodes (your own model)", key=K + "model.exit_nodes", placeholder="automatic",
                      disabled=not st.session_state[K + "model.exits"],
                      help="Where the BYOT exits tap your own model: submodule names such as layer1, layer2 "
                           "(model.named_modules() lists them). Empty: at its stage boundaries.")
        c2.text_input("Teacher weights file", key=K + "model.teacher_weights",
                      placeholder="train the teacher", disabled=not terms.uses(method, "teachers"),
                      help="Your own trained teacher: a state-dict file of this architecture "
                           "(torch.save(model.state_dict(), path)). Round 0 is loaded from it, not trained, and the "
                           "students distil from it.")

    with st.expander("Optimizer and schedule"):
        optim_box = st.container()
        with optim_box:
            c1, c2, c3, c4 = st.columns(4)
            c1.selectbox("Optimizer", OPTIMIZERS, key=K + "optim.name")
            c2.number_input("Learning rate", step=0.005, format="%.4f", key=K + "optim.lr")
            c3.number_input("Momentum", step=0.05, key=K + "optim.momentum")
            c4.toggle("Nesterov", key=K + "optim.nesterov")
            c1, c2, c3, c4 = st.columns(4)
            c1.number_input("Weight decay", step=1e-4, format="%.5f", key=K + "optim.weight_decay")
            c2.number_input("Batch size", step=1, key=K + "optim.batch_size")
            c3.number_input("Gradient clip (0 = off)", step=0.5, key=K + "optim.grad_clip")
            c4.number_input("Warm-up epochs", step=1.0, key=K + "optim.warmup_epochs")
            c1, c2, c3, c4 = st.columns(4)
            c1.selectbox("Schedule", SCHEDULES, key=K + "optim.schedule")
            c2.text_input("Step milestones (fractions of the epochs)", key=K + "optim.step_milestones")
            c3.number_input("Step factor", step=0.05, key=K + "optim.step_gamma")
            c4.number_input("SAM radius ρ (empty = off)", step=0.01, format="%.3f", placeholder="off",
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
        c2.number_input("Seed", step=1, key=K + "seed")
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
                     help="bf16: the training forward runs under bf16 autocast (weights stay fp32); "
                          "fast on recent GPUs.")
        c2.toggle("channels_last", key=K + "channels_last", help="NHWC memory layout: faster convolutions on GPUs.")
        c3.toggle("torch.compile", key=K + "compile",
                  help="Compiles the model for training (the first steps take longer); "
                       "falls back to eager if it fails.")
        c1, c2 = st.columns(2)
        c1.toggle("Deterministic", key=K + "deterministic",
                  help="torch's and cuDNN's deterministic algorithms while it trains (an op without one fails the "
                       "run), for bit-identical reruns; other runs training meanwhile in this dashboard get them too.")
        c1.toggle("Then compute λ_max and trace of every round", key=K + "curvature",
                  help="Right after training, a background job computes the Hessian's top eigenvalue and trace at "
                       "each round's kept weights (the Hessian page's settings), so Live ends with both answers: "
                       "more accurate, and flatter?")
        c2.number_input("CPU threads (0 = by model size)", step=1, key=K + "threads",
                        help="0: one thread for a small model (a batch's forward under 1 GFLOP, like the demo's), "
                             "every core for a larger one. Small models train as fast on one thread and stay fast "
                             "when other programs use the CPU (BENCHMARKS.md). The count changes the last digits of "
                             "the results, so a fixed rule keeps runs reproducible.")
        st.caption(ui.device_caption())

boxes = {"method": method_box, "data": data_box, "model": model_box, "optim": optim_box, "run": run_box}
error = None
try:
    cfg = form_config().validate()
    check_available(cfg.data)
except ConfigError as e:
    cfg, error, error_box = None, str(e), section_of(e.field)
    boxes[error_box].error(ui.plain(error), icon=":material/error:")
except DataError as e:
    cfg, error, error_box = None, str(e), "data"
    data_box.error(ui.plain(error), icon=":material/folder_off:")
st.session_state["train.config"] = cfg  # the Sweeps page sweeps it (None: the form does not validate)
split = train_split_size(cfg.data) if cfg is not None else None
warnings = size_warnings(cfg, split) if split is not None else []  # allowed, but not what a person may expect


def about_kd(c: RunConfig) -> str:
    n = c.model.teachers
    teacher = ("Round 0 (the **teacher**) trains on the labels alone." if n == 1 else
               f"Round 0 trains **{n} teachers** on the labels, independently; the mean of their logits is "
               "the teacher (Pham et al.'s ensemble as teacher).")
    return (f"{teacher} Then {c.rounds} student{'s' if c.rounds != 1 else ''} — same architecture, trained from "
            "scratch — each learn from the previous round's softened outputs.")


def about_dml(c: RunConfig) -> str:
    return (f"**{c.model.peers} peers** — same architecture, different inits — train together: each learns from "
            "the labels and from the other peers' current softened outputs. No teacher is trained first; peer 1 "
            "is the model reported.")


def about_one_network(c: RunConfig) -> str:
    lines = [f"- **{TERMS[t].short}**: {TERMS[t].label}" + (f" ({TERMS[t].source})" if TERMS[t].source != "—" else "")
             for t in ("ce",) + terms.terms_of(c)]
    exits = " It has shallow exits: every exit's accuracy and their ensemble are logged." if c.model.exits else ""
    return "One network, trained once on the sum of its terms." + exits + "\n" + "\n".join(lines)


ABOUT = {"kd": about_kd, "dml": about_dml}  # alone terms; any other method is one network

try:
    shown = cfg or form_config()  # the formula follows the form even while a field elsewhere is wrong
except ConfigError:
    shown = preset(st.session_state["preset"])
used = terms.terms_of(shown)
alone = next((t for t in used if TERMS[t].alone), None)
with about_box:
    st.subheader("What you will train")
    st.markdown(ABOUT.get(alone, about_one_network)(shown))
with loss_box:
    st.subheader("The loss you will optimize")
    st.latex(terms.formula(shown))
    st.caption(" ".join(terms.TERMS[t].symbols for t in ([alone] if alone else ["ce", *used])))
with right:
    ui.explain(
        "Pham et al. (*Revisiting Self-Distillation*) train a teacher, then a student of the **same** "
        "architecture on a mix of the labels (weight α) and the teacher's temperature-softened outputs "
        "(weight 1 − α, scaled by τ² so gradients keep their size). The student usually beats its teacher "
        "(their Table 2), more rounds fluctuate rather than keep improving, and students sit in flatter minima. "
        "With noisy labels the effect is easy to see: the teacher's soft outputs put mass on the right class "
        "for many mislabelled images.\n\n"
        "One network can also teach itself: **BYOT** (Zhang et al.) lets its deepest exit teach shallow exits, "
        "**PS-KD** (Kim et al.) mixes the network's own predictions of the previous epoch into its targets, and "
        "**DMFL** (seed paper 003) pulls every exit's features towards the deepest's. Seed paper 003 trains every "
        "combination of the three (the `demo-<terms>` presets on the digits); **Compare** puts them side by side "
        "with its Table 1.")
    for warning in warnings:
        st.warning(warning, icon=":material/warning:")
    launch_box = st.container()
    if st.button("Launch", type="primary", disabled=cfg is None, icon=":material/rocket_launch:",
                 width="stretch"):
        ui.launch(cfg, launch_box)
    if error:
        st.caption(f"Fix the error shown under **{TITLES[error_box]}** to launch.")

    st.page_link(ui.pages()["sweeps"], label="Sweep this config over a grid of values", icon=":material/grid_on:",
                 help="On the Sweeps page: every combination of a grid (e.g. α × seeds) as its own run, in parallel "
                      "on Ray, followed there.")
