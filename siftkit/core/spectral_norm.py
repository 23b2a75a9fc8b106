"""Spectral normalization of a classifier's head (R4F), and what it does to weights on disk.

R4F (Aghajanyan et al. 2021) divides the classification head's weight by its largest singular
value, ``W / sigma(W)``, so the head is 1-Lipschitz. fairseq builds the head with
``torch.nn.utils.spectral_norm`` on its output projection (``--spectral-norm-classification-head``,
fairseq/models/roberta/model.py `RobertaClassificationHead`); the kit uses torch's parametrization
(`torch.nn.utils.parametrizations.spectral_norm`, one power iteration per training forward,
eps 1e-12, as fairseq's call) on the Linear layers of the head, i.e. every module outside the
model's pre-trained ``base_model``.

A parametrized layer keeps its raw weight and the power iteration's vectors instead of
``weight``: its state-dict keys become ``<layer>.parametrizations.weight.original``,
``<layer>.parametrizations.weight.0._u`` and ``..._v``. Hence the helpers here:

- `follow_state_dicts`: a layer so marked takes either form from `load_state_dict` (it becomes
  parametrized, or plain, to match what is loaded), so checkpoints, the stage cache and early
  stopping restore it whatever form it had when saved;
- `baked_state_dict`: a state dict in the plain form (``weight = W / sigma`` exactly as the
  layer computes it in eval mode), for a model folder that loads into an ordinary model;
- `bake`: the same, in place on a layer (the function it computes is unchanged);
- `normalize`: to be applied before DDP wraps the model (`Method.prepare_model`);
- `raw_weights`: a context in which parametrized layers expose their raw weights, so that a
  model's own initializer re-initializes them (``reinit_head``);
- `refresh`: power iterations from the current vectors (after a weight was re-initialized).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from siftkit.core.split import unwrap

_PARAM = "weight"
_ORIGINAL = f"parametrizations.{_PARAM}.original"
_U, _V = f"parametrizations.{_PARAM}.0._u", f"parametrizations.{_PARAM}.0._v"
# torch's spectral_norm runs this many power iterations when it is applied (from random vectors).
INITIAL_POWER_ITERATIONS = 15
SCOPES = ("output", "all")


def head_linears(model: nn.Module, scope: str = "output") -> dict[str, nn.Linear]:
    """The classification head's Linear layers by name: every ``nn.Linear`` outside the model's
    ``base_model``; ``scope="output"`` keeps only the last one that gives the logits
    (``num_labels`` outputs), which is fairseq's ``out_proj``."""
    if scope not in SCOPES:
        raise ValueError(f"spectral_norm_layers must be one of {', '.join(map(repr, SCOPES))}; got {scope!r}")
    bare = unwrap(model)
    base = getattr(bare, "base_model", None)
    found = {
        name: m
        for child_name, child in bare.named_children()
        if child is not base
        for name, m in child.named_modules(prefix=child_name)
        if isinstance(m, nn.Linear)
    }
    if scope == "output":
        num_labels = getattr(getattr(bare, "config", None), "num_labels", None)
        logits = [name for name, m in found.items() if m.out_features == num_labels]
        found = {logits[-1]: found[logits[-1]]} if logits else {}
    if not found:
        raise ValueError(
            f"spectral_norm_classification_head=True: {type(bare).__name__} has no Linear layer outside "
            f"its base_model{' giving its num_labels logits' if scope == 'output' else ''} (the "
            f"classification head R4F normalizes)"
        )
    return found


def is_normalized(layer: nn.Module) -> bool:
    return parametrize.is_parametrized(layer, _PARAM)


def normalize(layer: nn.Linear) -> None:
    """Spectral normalization on `layer`'s weight (its random start vectors come from the global
    RNG of the weight's device; DDP gives every process process 0's when it wraps the model).

    Apply it before DDP wraps the model: registering a parametrization re-seats the raw weight
    (``Tensor.set_``), which gives it a new gradient accumulator, and DDP, which hooked the old
    one, would no longer average that weight's gradient. `bake`, `unnormalize` and `raw_weights`
    keep the accumulator and are safe at any time."""
    spectral_norm(layer, _PARAM, n_power_iterations=1, eps=1e-12)


@torch.no_grad()
def bake(layer: nn.Linear) -> None:
    """Replace the parametrization by the plain weight it gives in eval mode (no power step),
    in place in the same Parameter (optimizers and DDP keep it)."""
    plist = layer.parametrizations[_PARAM]
    plist.eval()
    value = plist()  # the value evaluation used: W / (u^T W v) with the stored vectors
    raw = plist.original
    parametrize.remove_parametrizations(layer, _PARAM, leave_parametrized=False)  # no set_: the same accumulator
    raw.copy_(value)


def unnormalize(layer: nn.Linear) -> None:
    """Drop the parametrization and keep the raw weight (it is about to be overwritten)."""
    parametrize.remove_parametrizations(layer, _PARAM, leave_parametrized=False)


@torch.no_grad()
def refresh(layer: nn.Linear, iterations: int = INITIAL_POWER_ITERATIONS) -> None:
    """Power iterations from the stored vectors toward the current raw weight's top singular
    pair (as many as torch runs when it applies the normalization; no random draw)."""
    w = layer.parametrizations[_PARAM].original
    u, v = _vectors(layer)
    for _ in range(iterations):
        u.copy_(F.normalize(torch.mv(w, v), dim=0, eps=1e-12))
        v.copy_(F.normalize(torch.mv(w.H, u), dim=0, eps=1e-12))


def _vectors(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    sn = layer.parametrizations[_PARAM][0]
    return sn._u, sn._v


def follow_state_dicts(layer: nn.Linear) -> None:
    """Make `layer` take whichever form a loaded state dict holds it in (see the module)."""

    def match_form(module, state_dict, prefix, *_):
        if prefix + _ORIGINAL in state_dict and not is_normalized(module):
            normalize(module)  # its random start vectors are overwritten by the loaded ones
        elif prefix + _PARAM in state_dict and is_normalized(module):
            unnormalize(module)

    layer.register_load_state_dict_pre_hook(match_form)


def baked_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every spectrally normalized weight in plain form: ``<layer>.weight`` =
    original / (u^T original v), the value the layer computes in eval mode, bit for bit.
    A state dict without such weights comes back unchanged (as a new dict)."""
    out = dict(state)
    for key in [k for k in state if k.endswith("." + _ORIGINAL) or k == _ORIGINAL]:
        prefix = key[: -len(_ORIGINAL)]
        if prefix + _U not in state or prefix + _V not in state:
            raise ValueError(
                f"{key}: a parametrized weight without spectral-norm vectors ({prefix + _U}, {prefix + _V})"
            )
        w = out.pop(key)
        u, v = out.pop(prefix + _U), out.pop(prefix + _V)
        with torch.no_grad():
            sigma = torch.vdot(
                u.clone(memory_format=torch.contiguous_format),
                torch.mv(w.flatten(1), v.clone(memory_format=torch.contiguous_format)),
            )
            out[prefix + _PARAM] = w / sigma
    return out


def has_parametrizations(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in model.modules())


@contextlib.contextmanager
def raw_weights(module: nn.Module) -> Iterator[None]:
    """Inside: every parametrized layer under `module` shows its raw tensors as plain attributes
    (``layer.weight`` is the raw Parameter itself), so a model's initializer writes into them; the
    parametrizations (their stored vectors too) are untouched. Each layer is seen as its plain
    class meanwhile: removing and registering the parametrization again would re-seat the weight
    and lose DDP's hook on it (see `normalize`)."""
    swapped = []
    for layer in [m for m in module.modules() if parametrize.is_parametrized(m)]:
        plain_class = type(layer).__bases__[0]  # torch injects Parametrized<Class>(Class)
        names = list(layer.parametrizations)
        swapped.append((layer, type(layer), names))
        layer.__class__ = plain_class
        for name in names:
            layer._parameters[name] = layer.parametrizations[name].original
    try:
        yield
    finally:
        for layer, parametrized_class, names in swapped:
            for name in names:
                del layer._parameters[name]
            layer.__class__ = parametrized_class
