"""Any torchvision classifier by name: head sized to the classes, first conv adapted to the channels."""
from __future__ import annotations

import torch
from torch import nn

from .registry import ModelEntry, ModelFamily, register_family

# Extra constructor arguments some torchvision models need to train from scratch on small data.
_EXTRA_KWARGS = {
    "inception_v3": {"aux_logits": False, "init_weights": True},
    "googlenet": {"aux_logits": False, "init_weights": True},
}


def builder_for(name: str):
    def build(in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float) -> nn.Module:
        import torchvision  # lazy: start-up time

        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                             **_EXTRA_KWARGS.get(name, {}))
        if in_channels != 3:
            adapt_first_conv(model, in_channels)
        return model

    return build


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d with one taking `in_channels`.

    Its weights become the mean over the input filters (repeated per channel, scaled so a gray image gives the
    same response), which keeps pretrained RGB filters meaningful for grayscale input, and a grayscale
    network's for RGB.
    """
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                new = nn.Conv2d(in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                                child.dilation, child.groups if child.groups == 1 else in_channels,
                                child.bias is not None, child.padding_mode)
                with torch.no_grad():
                    mean = child.weight.mean(dim=1, keepdim=True)
                    new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (child.in_channels / in_channels))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, child_name, new)
                return


def torchvision_names() -> list[str]:
    import torchvision  # lazy: start-up time (2-3 s); only torchvision models need it

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _resolve(name: str) -> ModelEntry | None:
    if name in torchvision_names():
        return ModelEntry(name, builder_for(name), "torchvision classifier", "torchvision")
    return None


register_family(ModelFamily("torchvision", _resolve, torchvision_names))
