"""An encoder classifier's layer stack, found by structure: what re-initialising the top layers
(Zhang et al., ICLR 2021) and layer-wise learning-rate decay (Howard & Ruder, 2018) act on.

The stack of ``head(encoder(E(ids)))``, bottom to top:

- layer 0, the *embeddings*: every parameter of the pre-trained ``base_model`` outside its
  transformer blocks and its pooler (the embedding block, and what every block shares, such as
  DeBERTa's relative-position embeddings and their LayerNorm, or ELECTRA's embedding projection);
- layers 1..N, the transformer *blocks*, the ``base_model``'s ``nn.ModuleList`` of
  ``num_hidden_layers`` (``n_layers``) modules (``encoder.layer``, DistilBERT's ``transformer.layer``);
- layer N + 1 = L, the *head*: the ``base_model``'s pooler where it has one (BERT's; the
  official code puts it with the classifier) and everything outside the ``base_model``.

A model whose blocks share their weights (ALBERT) has no such list, and is refused by name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from siftkit.core.split import UnsupportedModelError, unwrap


@dataclass
class LayerStack:
    """The bare model's parameters by layer (see the module): names as in ``model.named_parameters()``."""

    model: nn.Module  # the bare (unwrapped) model
    embeddings: list[str]
    blocks: list[nn.Module]  # bottom to top
    block_params: list[list[str]]
    pooler: nn.Module | None
    head: list[str]  # the pooler's parameters and everything outside the base model

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def layer_of(self) -> dict[str, int]:
        """{parameter name: its layer l}, 0 = embeddings ... L = num_blocks + 1 = the head."""
        out = {n: 0 for n in self.embeddings}
        for i, names in enumerate(self.block_params):
            out.update({n: i + 1 for n in names})
        out.update({n: self.num_blocks + 1 for n in self.head})
        return out


def _num_layers(config) -> int | None:
    for name in ("num_hidden_layers", "n_layers", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def layer_stack(model: nn.Module, *, field: str) -> LayerStack:
    """The model's `LayerStack`; `field` (the setting that needs it) names the refusal."""
    bare = unwrap(model)
    base = getattr(bare, "base_model", bare)
    n = _num_layers(getattr(bare, "config", None))
    found = next((m for m in base.modules() if isinstance(m, nn.ModuleList) and n and len(m) == n), None)
    if found is None:
        raise UnsupportedModelError(
            f"{field} needs the encoder's transformer blocks, a list of {n} layers, and {type(bare).__name__} has none "
            f"(its blocks share their weights, as ALBERT's do, or are not in one list); leave {field} at its default"
        )
    pooler = getattr(base, "pooler", None)
    pooler = pooler if isinstance(pooler, nn.Module) else None
    block_ids = [{id(p) for p in b.parameters()} for b in found]
    pooler_ids = {id(p) for p in pooler.parameters()} if pooler is not None else set()
    base_ids = {id(p) for p in base.parameters()}
    embeddings, head = [], []
    block_params: list[list[str]] = [[] for _ in found]
    for name, p in bare.named_parameters():
        layer = next((i for i, ids in enumerate(block_ids) if id(p) in ids), None)
        if layer is not None:
            block_params[layer].append(name)
        elif id(p) in pooler_ids or id(p) not in base_ids:
            head.append(name)
        else:
            embeddings.append(name)
    return LayerStack(bare, embeddings, list(found), block_params, pooler, head)


def layer_lr_groups(model: nn.Module, params: list[nn.Parameter], lr: float, gamma: float) -> list[dict]:
    """AdamW parameter groups of layer-wise learning-rate decay: layer l at ``lr * gamma^(L - l)``.

    With L = N + 1 for N blocks: the head (and pooler) at ``lr``, the top block at ``lr * gamma``,
    ..., the embeddings at ``lr * gamma^(N + 1)``. This is asappresearch/revisit-bert-finetuning's
    ``get_optimizer_grouped_parameters``, where the rate is multiplied by the decay once per layer
    from the top block down to the embeddings and classifier and pooler keep the base rate (Sun et al.
    2019 count from the top block instead, which keeps the top block at ``lr``). The official code
    also drops weight decay for biases and LayerNorm weights; here every group takes the run's
    ``weight_decay``, as plain fine-tuning does. Only `params` (the trainable ones) are grouped;
    groups come head first (the logged rate is the head's), each with its ``layer`` and ``name``.
    """
    stack = layer_stack(model, field="layer_lr_decay")
    layer = stack.layer_of()
    top = stack.num_blocks + 1
    by_id = {id(p): name for name, p in stack.model.named_parameters()}
    grouped: dict[int, list[nn.Parameter]] = {}
    for p in params:
        grouped.setdefault(layer[by_id[id(p)]], []).append(p)
    names = {0: "embeddings", top: "head"}
    return [
        {"params": grouped[i], "lr": lr * gamma ** (top - i), "layer": i, "name": names.get(i, f"block_{i}")}
        for i in sorted(grouped, reverse=True)
    ]


@contextlib.contextmanager
def _hf_init_allowed(modules: list[nn.Module]) -> Iterator[None]:
    """transformers (5.x) marks loaded weights ``_is_hf_initialized`` and its init functions then
    leave them alone, so ``_init_weights`` on a pre-trained layer would silently do nothing. The
    mark is lifted for these modules' tensors while they are re-initialised, then put back."""
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    marks = [t.__dict__.pop("_is_hf_initialized", None) for t in tensors]
    try:
        yield
    finally:
        for t, mark in zip(tensors, marks):
            if mark is not None:
                t._is_hf_initialized = mark


# Offset of the re-initialisation's seed from the run's: its draws are not the head's.
_REINIT_STREAM = 0x5EED_0001


@torch.no_grad()
def reinit_top_layers(model: nn.Module, k: int, *, seed: int) -> list[str]:
    """Re-initialise the top `k` transformer blocks and the pooler (where the base model has one)
    with the model's own ``_init_weights``, from a generator seeded by `seed` alone.

    asappresearch/revisit-bert-finetuning (``--reinit_layers k --reinit_pooler``) draws
    N(0, initializer_range) for Linear and Embedding weights, zeros for biases and ones/zeros for
    LayerNorm, by hand for BERT/RoBERTa/ELECTRA and with the model's ``_init_weights`` for BART;
    the model's own initialiser is the same rule for BERT and follows each architecture elsewhere.
    The global RNG is forked: the run's later draws (dropout, noise) are those of a run without
    re-initialisation. Returns the names of the parameters re-initialised.
    """
    stack = layer_stack(model, field="reinit_layers")
    if k > stack.num_blocks:
        raise ValueError(
            f"reinit_layers={k} re-initialises the top {k} encoder layers, and "
            f"{type(stack.model).__name__} has {stack.num_blocks}; use 0..{stack.num_blocks}"
        )
    if k <= 0:
        return []
    modules = [*stack.blocks[stack.num_blocks - k :], *([stack.pooler] if stack.pooler is not None else [])]
    cuda = sorted({p.device.index or 0 for p in stack.model.parameters() if p.device.type == "cuda"})
    init = stack.model._init_weights
    with torch.random.fork_rng(devices=cuda), _hf_init_allowed(modules):
        torch.manual_seed((seed * 1_000_003 + _REINIT_STREAM) % 2**63)
        for module in modules:
            module.apply(init)
    ids = {id(p) for m in modules for p in m.parameters()}
    return [name for name, p in stack.model.named_parameters() if id(p) in ids]
