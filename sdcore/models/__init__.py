"""Models for sdlab: a timm-style registry, every model a ``SectionNet`` (``base.py``) with timm's
forward surface, optionally with BYOT's shallow exits (``exits.py``).

    from sdcore.models import create
    model = create("resnet20", num_classes=10, exits=True, skip=False)
    logits = model(x)                     # [B, num_classes], deepest classifier: forward_head(forward_features(x))
    fmap = model.forward_features(x)      # [B, D, h, w], the last section's feature map
    feat = model.forward_head(fmap, pre_logits=True)  # [B, D], the pooled feature the classifier reads
    out = model.forward_exits(x)          # ExitOutputs(logits=[...], features=[...]), shallow first
"""
from sdcore.models.cohort import Cohort, is_cohort
from sdcore.models.exits import ExitOutputs, has_exits
from sdcore.models.registry import create, list_models, model_for_round, register

# Importing the architecture modules runs their @register calls.
from sdcore.models import cnn, resnet, vgg  # noqa: E402,F401  isort: skip

__all__ = ["Cohort", "ExitOutputs", "create", "has_exits", "is_cohort", "list_models", "model_for_round",
           "register"]
