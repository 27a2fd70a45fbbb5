"""The canonized copy of a model that LRP and Guided Backprop need, checked to compute the same logits.

Propagation rules attach to modules, so the graph must show every operation as its own module: torchvision's
ResNet blocks call one ReLU module twice (a rule's hooks would fire for both uses), run it in place (hooks
see overwritten tensors) and add the shortcut with `out += identity` (no module at all). torch.fx traces
the forward into a graph where each of these is a node, and the copy gets one ReLU module per call (not in
place), a zennit `Sum` module per tensor addition and, for LRP, each BatchNorm merged into the convolution
before it (torch.fx's `fuse`), since LRP's rules are defined for linear layers followed by activations.
"""
from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn

from ...errors import ConvlabError

ADDITIONS = (operator.add, operator.iadd, torch.add)
LOGIT_TOLERANCE = 1e-5  # the copy's logits may differ from the model's by this, relative to the largest logit


def canonize(model: nn.Module, example: torch.Tensor, merge_batchnorm: bool = True,
             method: str = "lrp") -> fx.GraphModule:
    """A canonized copy of `model` (left untouched), checked on `example` (N, C, H, W) to give its logits."""
    model = copy.deepcopy(model).eval()
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        raise ConvlabError(f"{method}: cannot trace {type(model).__name__} into a graph of modules "
                           f"({_first_line(err)}); {method} needs one") from None
    if merge_batchnorm:
        from torch.fx.experimental.optimization import fuse

        graph_module = fuse(graph_module, inplace=True, no_trace=True)
    _own_activation_per_call(graph_module)
    _additions_as_modules(graph_module)
    graph_module.graph.lint()
    graph_module.recompile()
    check_same_logits(model, graph_module, example, method)
    return graph_module


def _own_activation_per_call(graph_module: fx.GraphModule) -> None:
    """Every call of an activation module gets its own copy, not in place."""
    modules = dict(graph_module.named_modules())
    for i, node in enumerate(list(graph_module.graph.nodes)):
        if node.op != "call_module" or not hasattr(modules[node.target], "inplace"):
            continue
        fresh = copy.deepcopy(modules[node.target])
        fresh.inplace = False
        name = f"{node.target.replace('.', '_')}_call{i}"
        graph_module.add_submodule(name, fresh)
        node.target = name
    graph_module.delete_all_unused_submodules()


def _additions_as_modules(graph_module: fx.GraphModule) -> None:
    """a + b of two tensors -> Sum(stack([a, b], -1)), the form zennit's canonizers give residual additions."""
    from zennit.layer import Sum

    graph = graph_module.graph
    for i, node in enumerate(list(graph.nodes)):
        is_addition = node.op == "call_function" and node.target in ADDITIONS
        if not (is_addition and len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)):
            continue
        name = f"canonical_sum{i}"
        graph_module.add_submodule(name, Sum())
        with graph.inserting_before(node):
            stacked = graph.call_function(torch.stack, (tuple(node.args),), {"dim": -1})
            summed = graph.call_module(name, (stacked,))
        node.replace_all_uses_with(summed)
        graph.erase_node(node)


def check_same_logits(model: nn.Module, copy_: nn.Module, example: torch.Tensor, method: str) -> None:
    with torch.no_grad():
        expected, got = model(example), copy_(example)
    error = (expected - got).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    if not error <= LOGIT_TOLERANCE * scale:
        raise ConvlabError(f"{method}: the canonized copy of {type(model).__name__} gives other logits "
                           f"(largest difference {error:.2g}); this model's graph is not one {method} can handle")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
