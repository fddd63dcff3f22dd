"""Self-distillation methods as sets of loss terms: the one home of every term (timm-style registry).

A run's ``method`` names its terms joined by "+": ``"kd"``, ``"dml"``, or any combination of
``pskd``, ``byot`` and ``dmfl`` on one network (``"pskd+byot+dmfl"``: every row of seed paper 003's
Table 1); ``"ce"`` is the labels alone (its baseline row). Every method trains the deepest output on
cross-entropy (term ``ce``); the other terms add to it or change its target:

    ce    CE(target, p_C) on the deepest output                       every method
    kd    multi-round: round k learns from round k-1 (Pham et al.)    alone
    dml   K peers learn from each other's predictions                  alone
    pskd  the CE target becomes (1 - a_t) y + a_t p_prev-epoch        with byot / dmfl
    byot  each shallow exit: CE + distillation from the deepest + hint  with pskd / dmfl
    dmfl  symmetric KL between each exit's feature and the deepest's   with pskd / byot

Config validation, the engine, the sweep, the pages, the CLI and the tests read these entries
(``TERMS``, ``BYOT_STYLES``) rather than testing method names. A single-network term's entry also holds
how it trains (``state``, ``at_epoch``, ``target``, ``loss``: sdcore.methods.single composes them), so a
new term is one entry, its loss function (sdcore.losses) and its tests.

BYOT has three *styles* (``byot_style``), because its loss differs between sdlab's convention and
the two codebases its presets follow; each is tested against a transcription of its source:

    sdlab  shallow i: a CE + (1-a) tau^2 KL(p_C^tau || p_i^tau) + b mean((F_i - F_C)^2); deepest: CE
           (Pham et al.'s tau^2 convention applied to the exits; sdlab's own, runs before styles existed)
    zhang  the first author's final code (ArchipLab-LinfengZhang/pytorch-self-distillation-final,
           train.py): shallow i: a CE + (1-a) softCE(p_C^tau, p_i^tau) with no tau^2;
           + b ||A_i F_i - F_C||_2 (unsquared, through a learned Linear adapter A_i, on every shallow
           exit but the one nearest the deepest: the code's ``index != 1``); deepest: CE
    luan   luanyunteng/pytorch-be-your-own-teacher, whose alpha = 0.1 and beta = 1e-6 seed paper 003
           uses: a CE on *every* exit (the deepest too) + (1-a) tau^2 softCE + b sum over elements of
           (F_i - F_C)^2 where F_i > 0 or F_C > 0

(a = sdlab's alpha, the hard-label weight; softCE(p, q) = -sum p log q = KL(p || q) + H(p): the same
gradient as the KL, and the value the authors' code logs.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch.nn.functional as F
from torch import Tensor

from sdcore.config import ConfigError
from sdcore.losses import BYOT_STYLES, byot_loss, dmfl_loss, pskd_prev_weight, pskd_targets, target_ce


@dataclass(frozen=True)
class Term:
    name: str
    short: str  # in method labels: "PS-KD + BYOT"
    label: str  # one line for people: menus, help texts
    source: str  # the paper (and code) it follows
    formula: Callable[[Any], str]  # cfg -> LaTeX rows ("&" aligned) of this term's part of the loss
    symbols: str = ""  # what the formula's symbols mean, for people (Markdown with $LaTeX$)
    fields: tuple[str, ...] = ()  # the config fields it reads (its knobs; epochs are every method's)
    needs_exits: bool = False  # trains BYOT's shallow exits (model.exits must be true)
    multi_round: bool = False  # teacher + cfg.rounds students, each a fresh network
    peers: bool = False  # may train model.peers > 1 networks together
    teachers: bool = False  # may train model.teachers > 1 networks in round 0
    alone: bool = False  # combines with no other term
    no_sam: str = ""  # why SAM is refused with this term ("" = allowed)
    logs: Mapping[str, str] = field(default_factory=dict)  # key -> chart label of what it adds to metrics.jsonl's
    #     per-epoch train_parts (single-network recipes: each term's weighted share of the objective, train_loss)
    recipe: str = "single"  # module of sdcore.methods that trains it
    # How a single-network term trains (sdcore.methods.single, in registry order; None: nothing to do):
    state: Callable[[Any, Any], dict[str, Tensor]] | None = None  # (cfg, data) -> tensors kept across epochs and
    #                                                               checkpointed with the model (PS-KD's memory)
    at_epoch: Callable[[Any, int], dict[str, float]] | None = None  # (cfg, 0-based epoch) -> that epoch's values
    target: Callable[["Step"], Tensor] | None = None  # the deepest output's CE target in place of the labels
    loss: Callable[["Step"], "TermLoss"] | None = None  # its share of the objective and the parts it logs
    replaces: tuple[str, ...] = ()  # terms whose loss this one's includes (byot's holds the deepest CE)


@dataclass
class Step:
    """One training batch as the terms see it (sdcore.methods.single.loss_fn fills it)."""
    cfg: Any  # the RunConfig
    model: Any  # the nn.Module (its hint adapters, where a BYOT style has them)
    y: Tensor  # int64 labels [B]
    idx: Tensor  # the examples' indices in the training split [B]
    logits: list[Tensor]  # [B, C] per output, shallow first, deepest last ([z] without exits)
    features: list[Tensor]  # [B, D] per exit, shallow first ([] without exits)
    target: Tensor  # the deepest output's CE target: y, or a distribution [B, C] after a ``target`` hook
    state: dict[str, Tensor]  # the terms' ``state`` tensors
    epoch: dict[str, float]  # the terms' ``at_epoch`` values of the current epoch


TermLoss = tuple[Tensor, dict[str, Tensor]]  # (its share of the objective, its ``logs`` parts, which add up to it)


TERMS: dict[str, Term] = {}


def register_term(term: Term) -> Term:
    if term.name in TERMS:
        raise ValueError(f"term {term.name!r} is already registered")
    TERMS[term.name] = term
    return term


# ---------------------------------------------------------------- parsing and questions about a method

def parse_method(method: Any) -> tuple[str, ...]:
    """The terms of a method string in registry order, "ce" dropped ("ce" alone -> ()).

    Raises ConfigError (field "method") for unknown or repeated terms and invalid combinations."""
    allowed = "a term or terms joined by '+' from " + ", ".join(TERMS)
    if not isinstance(method, str) or not method.strip():
        raise ConfigError(f"method must be {allowed}, got {method!r}", field="method")
    parts = [p.strip() for p in method.split("+")]
    unknown = [p for p in parts if p not in TERMS]
    if unknown:
        raise ConfigError(f"method must be {allowed}, got {method!r} (unknown: {', '.join(unknown)})",
                          field="method")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"method must name each term once, got {method!r}", field="method")
    terms = tuple(t for t in TERMS if t in parts and t != "ce")
    for t in terms:
        if TERMS[t].alone and len(terms) > 1:
            raise ConfigError(f"method {t} combines with no other term ({TERMS[t].label}), got {method!r}",
                              field="method")
    return terms


def canonical(method: str) -> str:
    """"byot+pskd" -> "pskd+byot"; "ce+byot" -> "byot"; a string that does not parse is returned as is."""
    try:
        return method_name(parse_method(method))
    except ConfigError:
        return method


def method_name(terms: tuple[str, ...]) -> str:
    return "+".join(terms) if terms else "ce"


def terms_of(cfg) -> tuple[str, ...]:
    """The terms of a config (``RunConfig``) or of a method string."""
    return parse_method(cfg if isinstance(cfg, str) else cfg.method)


def has(cfg, term: str) -> bool:
    return term in terms_of(cfg)


def uses(cfg, flag: str) -> bool:
    """Any of the config's (or method string's) terms has ``flag`` set: "needs_exits", "peers", ..."""
    return any(getattr(TERMS[t], flag) for t in terms_of(cfg))


def needs_exits(cfg) -> bool:
    return uses(cfg, "needs_exits")


def num_rounds(cfg) -> int:
    """Networks trained one after another: teacher + students for a multi-round method, else 1."""
    return cfg.rounds + 1 if is_multi_round(cfg) else 1


def is_multi_round(cfg) -> bool:
    return uses(cfg, "multi_round")


def recipe(cfg) -> str:
    recipes = {TERMS[t].recipe for t in terms_of(cfg)} - {"single"}
    return recipes.pop() if recipes else "single"


def settings(cfg) -> dict[str, Any]:
    """The effective values of the fields the config's terms read ({} for the labels alone): what two
    runs must share for their terms to be the same (pskd_alpha None means alpha)."""
    out = {f: getattr(cfg, f) for t in terms_of(cfg) for f in TERMS[t].fields}
    if "pskd_alpha" in out:
        out["pskd_alpha"] = pskd_final_alpha(cfg)
    if "pskd_exits" in out and not has(cfg, "byot"):
        del out["pskd_exits"]  # without exits trained on CE it changes nothing
    return out


def hint_adapters(cfg) -> bool:
    """The model carries BYOT's learned hint adapters (the zhang style)."""
    return has(cfg, "byot") and BYOT_STYLES[cfg.byot_style].adapters


def label(method: str) -> str:
    """'PS-KD + BYOT + DMFL' for people; the string itself if it does not parse."""
    try:
        terms = parse_method(method)
    except ConfigError:
        return method
    return " + ".join(TERMS[t].short for t in terms) if terms else TERMS["ce"].short


def all_methods() -> list[str]:
    """Every valid method string: each alone term, and every subset of the combinable ones."""
    alone = [t for t, e in TERMS.items() if e.alone]
    free = [t for t, e in TERMS.items() if not e.alone and t != "ce"]
    subsets = [()]
    for t in free:
        subsets += [s + (t,) for s in subsets]
    return alone + [method_name(tuple(x for x in TERMS if x in s)) for s in sorted(subsets, key=len)]


def validate(cfg) -> None:
    """The method's own rules; ConfigError names the field (called by RunConfig.validate)."""
    terms = parse_method(cfg.method)
    m = cfg.model
    if cfg.rounds != 0 and not uses(cfg, "multi_round"):
        raise ConfigError(f"rounds must be 0 when method is {cfg.method} (it trains one network; multi-round "
                          f"distillation is method kd), got {cfg.rounds!r}", field="rounds")
    exits = uses(cfg, "needs_exits")
    if m.exits != exits:
        need = ", ".join(t for t in terms if TERMS[t].needs_exits)
        raise ConfigError(f"model.exits must be {str(exits).lower()} when method is {cfg.method} "
                          + (f"({need} trains the shallow exits)" if exits else
                             "(only byot and dmfl use the shallow exits)") + f", got {m.exits!r}", field="model.exits")
    if m.peers != 1 and not uses(cfg, "peers"):
        raise ConfigError(f"model.peers must be 1 unless method is dml (only deep mutual learning trains several "
                          f"peers), got {m.peers!r}", field="model.peers")
    if m.teachers != 1 and not uses(cfg, "teachers"):
        raise ConfigError(f"model.teachers must be 1 unless method is kd (an ensemble of teachers teaches the "
                          f"students of multi-round KD), got {m.teachers!r}", field="model.teachers")
    if m.teacher_weights is not None and not uses(cfg, "teachers"):
        raise ConfigError(f"model.teacher_weights must be null unless method is kd (its students distil from the "
                          f"loaded teacher), got {m.teacher_weights!r}", field="model.teacher_weights")
    no_sam = [TERMS[t] for t in terms if TERMS[t].no_sam]
    if cfg.optim.sam_rho is not None and no_sam:
        raise ConfigError(f"optim.sam_rho must be null with method {cfg.method} ({no_sam[0].name}: "
                          f"{no_sam[0].no_sam}), got {cfg.optim.sam_rho!r}", field="optim.sam_rho")


# ---------------------------------------------------------------- formulas (LaTeX, with the config's numbers)

def _target(cfg) -> str:
    return r"\tilde y" if has(cfg, "pskd") else "y"


def _ce_formula(cfg) -> str:
    w = ""
    if has(cfg, "byot") and BYOT_STYLES[cfg.byot_style].deepest_ce == "alpha":
        w = f"{cfg.alpha:.2f}\\,"
    return rf"\mathcal{{L}} &= {w}\mathrm{{CE}}({_target(cfg)}, p_C)"


def _kd_formula(cfg) -> str:
    a, t = cfg.alpha, cfg.temperature
    return (rf"\mathcal{{L}}_{{\text{{student}}}} &= \underbrace{{{a:.2f}}}_{{\alpha}}\,"
            rf"\mathrm{{CE}}(y, p_s) \\ &+ \underbrace{{{1 - a:.2f}}}_{{1-\alpha}}\cdot"
            rf"\underbrace{{{t:g}^2}}_{{\tau^2}}\,\mathrm{{KL}}\big(p_t^{{\tau}} \,\|\, p_s^{{\tau}}\big)")


def _dml_formula(cfg) -> str:
    a, t = cfg.alpha, cfg.temperature
    return (rf"\mathcal{{L}}_i &= {a:.2f}\,\mathrm{{CE}}(y, p_i) \\ &+ {1 - a:.2f}\cdot {t:g}^2"
            rf"\,\tfrac{{1}}{{K-1}}\sum_{{j \ne i}} \mathrm{{KL}}\big(p_j^{{\tau}} \,\|\, p_i^{{\tau}}\big)")


def pskd_final_alpha(cfg) -> float:
    """PS-KD's hard-label weight at the last epoch, 1 - alpha_T (sdlab's convention)."""
    return cfg.alpha if cfg.pskd_alpha is None else cfg.pskd_alpha


def _pskd_formula(cfg) -> str:
    where = r"\text{every exit}" if has(cfg, "byot") and cfg.pskd_exits else r"\text{the deepest}"
    return (rf"\tilde y &= (1-a_t)\,y + a_t\, p_C^{{(t-1)}},\quad a_t = {1 - pskd_final_alpha(cfg):.2f}"
            rf"\cdot \tfrac{{t}}{{{cfg.epochs}}}\ \ ({where})")


def _byot_formula(cfg) -> str:
    s = BYOT_STYLES[cfg.byot_style]
    a, t, b = cfg.alpha, cfg.temperature, cfg.hint_weight
    y = r"\tilde y" if has(cfg, "pskd") and cfg.pskd_exits else "y"
    scale = rf"{t:g}^2\," if s.tau_squared else ""
    distill = (r"\mathrm{KL}\big(p_C^{\tau} \,\|\, p_i^{\tau}\big)" if s.distill == "kl" else
               r"\mathrm{CE}\big(p_C^{\tau}, p_i^{\tau}\big)")
    hint = {"mean_sq": r"\overline{(F_i - F_C)^2}", "adapter_l2": r"\lVert A_i F_i - F_C \rVert_2",
            "masked_sse": r"\textstyle\sum_{F_i>0 \lor F_C>0}(F_i - F_C)^2"}[s.hint]
    over = r"\sum_{i<C-1}" if s.skip_nearest_hint else r"\sum_{i<C}"
    return (rf"&+ \sum_{{i<C}} \Big[{a:.2f}\,\mathrm{{CE}}({y}, p_i) + {1 - a:.2f}\cdot {scale}{distill}\Big] \\ "
            rf"&+ {b:g}\,{over} {hint}")


def _dmfl_formula(cfg) -> str:
    return (rf"&+ {cfg.dmfl_weight:g}\cdot\tfrac{{1}}{{C-1}}\sum_{{i<C}} \big[\mathrm{{KL}}(q_i \,\|\, q_C) + "
            rf"\mathrm{{KL}}(q_C \,\|\, q_i)\big],\ \ q_i = \mathrm{{softmax}}(F_i / {cfg.dmfl_temperature:g})")


def formula(cfg) -> str:
    """The whole loss of the config's method, one LaTeX ``aligned`` block (the Train page renders it)."""
    terms = terms_of(cfg)
    alone = [t for t in terms if TERMS[t].alone]
    if alone:
        rows = [TERMS[alone[0]].formula(cfg)]
    else:
        rows = [_ce_formula(cfg)] + [TERMS[t].formula(cfg) for t in ("byot", "dmfl") if t in terms]
        if "pskd" in terms:
            rows.append(_pskd_formula(cfg))
    return r"\begin{aligned}" + r" \\ ".join(rows) + r"\end{aligned}"


# ---------------------------------------------------------------- how the single-network terms train

def _ce_loss(s: Step) -> TermLoss:
    ce = target_ce(s.logits[-1], s.target)
    return ce, {"ce": ce}


def _pskd_state(cfg, data) -> dict[str, Tensor]:
    """Each training example's softmax in the previous epoch [N_train, C]; one-hot before the first epoch, as in
    the authors' code; float32 (also under bf16 autocast)."""
    return {"memory": F.one_hot(data.train.y, data.num_classes).float()}


def _pskd_epoch(cfg, epoch: int) -> dict[str, float]:
    return {"pskd_weight": pskd_prev_weight(epoch, cfg.epochs, pskd_final_alpha(cfg))}


def _pskd_target(s: Step) -> Tensor:
    memory = s.state["memory"]
    target = pskd_targets(s.y, memory[s.idx], prev_weight=s.epoch["pskd_weight"])
    memory[s.idx] = s.logits[-1].detach().to(memory.dtype).softmax(1)  # read above: p of the previous epoch
    return target


def _byot_loss(s: Step) -> TermLoss:
    cfg = s.cfg
    shallow = s.target if cfg.pskd_exits else s.y  # with pskd, pskd_exits gives the shallow exits its target too
    b = byot_loss(s.logits, s.features, [shallow] * (len(s.logits) - 1) + [s.target], alpha=cfg.alpha,
                  temperature=cfg.temperature, hint_weight=cfg.hint_weight, style=cfg.byot_style,
                  adapters=getattr(s.model, "hint_adapters", None))
    deepest_w = cfg.alpha if BYOT_STYLES[cfg.byot_style].deepest_ce == "alpha" else 1.0
    return b.total, {"ce": deepest_w * b.ce[-1], "byot_ce": cfg.alpha * b.ce[:-1].sum(),
                     "byot_distill": (1.0 - cfg.alpha) * b.kl.sum(), "byot_hint": cfg.hint_weight * b.hint.sum()}


def _dmfl_loss(s: Step) -> TermLoss:
    d = s.cfg.dmfl_weight * dmfl_loss(s.features, temperature=s.cfg.dmfl_temperature)
    return d, {"dmfl": d}


# ---------------------------------------------------------------- the terms

register_term(Term("ce", "labels only", "cross-entropy on the labels (every method's deepest output)", "—", _ce_formula,
                   symbols=r"$p_C$: the network's softmax; $y$: the one-hot label.", logs={"ce": "deepest exit's CE"},
                   loss=_ce_loss))
register_term(Term("kd", "multi-round KD", "multi-round self-distillation: round k learns from round k-1",
                   "Pham et al., Revisiting Self-Distillation, Eq. 1", _kd_formula,
                   symbols=r"$p^\tau = \mathrm{softmax}(z/\tau)$: logits softened by the temperature; $p_t$ the "
                           r"previous round's, $p_s$ the student's.",
                   fields=("alpha", "temperature", "rounds"), multi_round=True,
                   teachers=True, alone=True, recipe="kd_rounds"))
register_term(Term("dml", "DML", "deep mutual learning: K peers learn from each other's predictions",
                   "Zhang et al. 2018; seed paper 003's DML", _dml_formula,
                   symbols=r"$p_i^\tau = \mathrm{softmax}(z_i/\tau)$: peer $i$'s logits softened by the temperature.",
                   fields=("alpha", "temperature"), peers=True, alone=True,
                   no_sam="SAM's ascent step would couple the peers through one gradient norm",
                   recipe="dml"))
register_term(Term("pskd", "PS-KD", "progressive self-knowledge distillation: targets mix in last epoch's predictions",
                   "Kim et al. (PS-KD), lgcnsai/PS-KD-Pytorch; seed paper 003", _pskd_formula,
                   symbols=r"$\tilde y$: PS-KD's target; $p_C^{(t-1)}$: the model's own prediction on the example in "
                           r"the previous epoch; $t$ the epoch.",
                   fields=("pskd_alpha", "pskd_exits"), state=_pskd_state, at_epoch=_pskd_epoch, target=_pskd_target,
                   no_sam="its per-example memory is written inside the loss, so SAM's second pass would "
                          "overwrite it"))
register_term(Term("byot", "BYOT", "be your own teacher: the deepest exit teaches the shallow exits",
                   "Zhang et al. (BYOT) Eq. 5 and their code; seed paper 003 Eq. 2", _byot_formula,
                   symbols=r"$p_i$: exit $i$'s softmax ($C$: the deepest exit, $p^\tau$ softened by $\tau$); $F_i$: "
                           r"exit $i$'s feature.",
                   fields=("alpha", "temperature", "hint_weight", "byot_style"), needs_exits=True,
                   logs={"byot_ce": "BYOT: shallow exits' CE", "byot_distill": "BYOT: distillation",
                         "byot_hint": "BYOT: feature hint"}, loss=_byot_loss, replaces=("ce",)))
register_term(Term("dmfl", "DMFL", "deep mutual feature learning: symmetric KL between exit features and the deepest's",
                   "seed paper 003 Eq. 3", _dmfl_formula,
                   symbols=r"$q_i$: exit $i$'s feature $F_i$ as a distribution over its channels.",
                   fields=("dmfl_weight", "dmfl_temperature"), needs_exits=True, logs={"dmfl": "DMFL: feature KL"},
                   loss=_dmfl_loss))
