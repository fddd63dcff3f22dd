import json

import pytest

from sdcore.config import PRESETS, ConfigError, RunConfig, apply_overrides, parse_override, preset

# (dotted key, bad value, words the message must contain)
BAD_FIELDS = [
    ("name", "", "name"),
    ("method", "dml", "method"),
    ("alpha", 1.5, "alpha must be in [0, 1]"),
    ("alpha", -0.1, "alpha"),
    ("alpha", float("nan"), "alpha"),
    ("temperature", 0, "temperature must be in (0, 100]"),
    ("rounds", -1, "rounds"),
    ("rounds", 1.5, "rounds"),
    ("epochs", 0, "epochs"),
    ("hint_weight", -1, "hint_weight"),
    ("select", "best_test", "select"),
    ("seed", -3, "seed"),
    ("device", "tpu", "device"),
    ("data.name", "imagenet21k", "data.name"),
    ("data.root", "", "data.root"),
    ("data.label_noise", 1.0, "data.label_noise must be in [0, 1)"),
    ("data.val_fraction", 0.9, "data.val_fraction"),
    ("data.subset", 3, "data.subset"),
    ("data.augment", "yes", "data.augment"),
    ("model.arch", "resnet1000", "model.arch"),
    ("model.width", 0, "model.width"),
    ("model.exits", 1, "model.exits"),
    ("optim.name", "lbfgs", "optim.name"),
    ("optim.lr", 0, "optim.lr"),
    ("optim.lr", "fast", "optim.lr"),
    ("optim.momentum", 1.0, "optim.momentum"),
    ("optim.weight_decay", -1e-4, "optim.weight_decay"),
    ("optim.batch_size", 0, "optim.batch_size"),
    ("optim.grad_clip", -5, "optim.grad_clip"),
    ("optim.schedule", "linear", "optim.schedule"),
    ("optim.step_milestones", (0.75, 0.5), "optim.step_milestones"),
    ("optim.step_gamma", 2, "optim.step_gamma"),
    ("optim.warmup_epochs", 30, "optim.warmup_epochs"),
]


@pytest.mark.parametrize("key,value,words", BAD_FIELDS, ids=[f"{k}={v!r}" for k, v, _ in BAD_FIELDS])
def test_each_bad_field_names_field_value_and_range(key, value, words):
    cfg = preset("demo").replace(**{key: value})
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    msg = str(e.value)
    assert words in msg
    assert repr(value) in msg or str(value) in msg
    assert "\n" not in msg


@pytest.mark.parametrize("changes,words", [
    ({"method": "byot", "rounds": 0}, "model.exits"),  # BYOT needs the exits
    ({"model.exits": True}, "model.exits"),  # exits only with BYOT
    ({"method": "pskd", "rounds": 2}, "rounds must be 0 when method is pskd"),
    ({"model.arch": "cnn", "model.skip": False}, "model.skip"),
    ({"data.val_fraction": 0.0, "select": "best_val"}, "select"),
    ({"optim.nesterov": True, "optim.momentum": 0.0}, "optim.nesterov"),
])
def test_bad_combinations_are_explained(changes, words):
    with pytest.raises(ConfigError, match=words):
        preset("demo").replace(**changes).validate()


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_round_trips_through_json(name, tmp_path):
    cfg = preset(name).validate()
    path = tmp_path / "c.json"
    cfg.save(path)
    assert RunConfig.load(path) == cfg
    assert PRESETS[name].description


def test_pham_presets_mirror_the_paper_setup():
    for a in (0.2, 0.5, 0.8):
        c = preset(f"pham-cifar10-resnet18-a{a}")
        o = c.optim
        assert (c.alpha, o.lr, o.momentum, o.weight_decay, o.batch_size, o.grad_clip, o.schedule) == \
            (a, 0.025, 0.9, 3e-4, 96, 5.0, "cosine")
        assert (c.data.name, c.model.arch, c.rounds) == ("cifar10", "resnet18", 3)


def test_byot_preset_converts_the_papers_alpha():
    c = preset("byot-cifar100-resnet18")
    assert c.alpha == pytest.approx(1 - 0.3)  # BYOT's alpha weighs the KL; sdlab's the hard label
    assert c.model.exits and c.method == "byot"


def test_overrides_parse_json_values_and_short_keys():
    assert parse_override("lr=0.1") == ("optim.lr", 0.1)
    assert parse_override("data.subset=null") == ("data.subset", None)
    assert parse_override("arch=resnet20") == ("model.arch", "resnet20")
    assert parse_override("augment=true") == ("data.augment", True)
    cfg = apply_overrides(preset("demo"), ["alpha=0.5", "label_noise=0.1", "step_milestones=[0.3,0.6]"])
    assert (cfg.alpha, cfg.data.label_noise, cfg.optim.step_milestones) == (0.5, 0.1, (0.3, 0.6))


@pytest.mark.parametrize("text,words", [
    ("alpha", "key=value"),
    ("nope=1", "unknown config key 'nope'"),
    ("name=x", None),  # fine
])
def test_override_errors(text, words):
    if words is None:
        assert parse_override(text) == ("name", "x")
    else:
        with pytest.raises(ConfigError, match=words):
            parse_override(text)


def test_load_rejects_unknown_fields_and_bad_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"alpha": 0.3, "data": {"nosie": 0.1}}))
    with pytest.raises(ConfigError, match="unknown config field data.nosie"):
        RunConfig.load(p)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.load(p)
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "missing.json")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; known: demo"):
        preset("nope")
