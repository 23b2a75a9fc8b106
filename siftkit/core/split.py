"""Split any Hugging Face encoder classifier at a point inside its embedding block.

An encoder classifier is ``head(encoder(E(ids)))`` and its embedding block computes
``x = W[ids] + P[pos] + T[type]`` (DeBERTa-v2 may project ``x``), ``e = LayerNorm(x)``, then
dropout. SMART and SiFT perturb one of three tensors of that block:

- ``embedding_output``  ``e``, the block's output (what mt-dnn's SMART and the seed paper perturb);
- ``word_embeddings``   ``W[ids]``, the word-embedding lookup, before position/type and LayerNorm;
- ``pre_layernorm``     ``x``, the input of the block's LayerNorm (DeBERTa's official SiFT).

The split is found by structure (``model.base_model.embeddings`` and its word-embedding and
LayerNorm children), never by a per-class copy of a model's ``forward``. Both directions
run the model's own ``forward`` with a temporary hook at the point: ``embed`` captures the
tensor there (and stops the forward early), ``forward_from`` replaces it with a given one,
so everything after the point — attention masks, relative positions, DeBERTa's masking of
padded embeddings — is exactly the model's code. Hooks live only inside one call (removed
in ``finally``), so evaluation and later calls are untouched.

Invariant (eval mode): ``forward_from(embed(batch, at), batch, at) == model(**batch).logits``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from siftkit.core.perturbation_specs import PERTURB_POINTS

# Keys a collated batch may carry that are not model inputs.
_NON_INPUT_KEYS = {"labels", "label", "idx", "id", "source"}


class UnsupportedModelError(TypeError):
    """The model has no embedding block that the split can find by structure."""


class _StopForward(Exception):
    """Raised by a capture hook to end a forward once the wanted tensor is known."""


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DDP / accelerate / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
        else:
            return model


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a collated batch that the model's forward takes (labels dropped)."""
    return {k: v for k, v in batch.items() if k not in _NON_INPUT_KEYS}


class EmbeddingSplit:
    """The embedding block of `model`, and the model's forward from any point inside it.

    `model` may be wrapped (DDP through accelerate); the structure is looked up on the
    unwrapped model, while forwards go through `model` itself so wrappers keep working.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        core = unwrap(model)
        self.model_class = type(core).__name__
        base = getattr(core, "base_model", core)
        embeddings = getattr(base, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            raise UnsupportedModelError(
                f"{self.model_class}: no embedding block found (expected "
                f"`model.base_model.embeddings`); siftkit supports encoder classifiers such as "
                f"BERT, RoBERTa, DeBERTa, DistilBERT, ELECTRA and ALBERT"
            )
        self.embeddings = embeddings
        self.word_embeddings = _find_word_embeddings(embeddings, self.model_class)
        self.layer_norm = _find_layer_norm(embeddings)

    # ----------------------------------------------------------------------------------
    def module_at(self, at: str) -> nn.Module:
        if at == "embedding_output":
            return self.embeddings
        if at == "word_embeddings":
            return self.word_embeddings
        if at == "pre_layernorm":
            if self.layer_norm is None:
                raise UnsupportedModelError(
                    f"{self.model_class}: the embedding block has no LayerNorm, so "
                    f"perturb_at='pre_layernorm' is not available"
                )
            return self.layer_norm
        raise ValueError(f"perturb_at must be one of {', '.join(map(repr, PERTURB_POINTS))}; got {at!r}")

    def embed(self, batch: Mapping[str, Any], at: str = "embedding_output") -> torch.Tensor:
        """The tensor (B, L, H) at `at`; the forward stops there (no encoder cost)."""
        captured: list[torch.Tensor] = []
        with self._hook(at, captured=captured, stop=True):
            try:
                self.model(**model_inputs(batch))
            except _StopForward:
                pass
        return self._single(captured, at)

    def forward_capture(self, batch: Mapping[str, Any], at: str = "embedding_output"):
        """One full forward returning ``(logits, z)`` where `z` is the tensor at `at`.

        `z` stays in the autograd graph, so a loss on a later ``forward_from(z + delta)``
        trains the embedding block too; the training step uses this to get the clean
        logits and the point to perturb from a single forward.
        """
        captured: list[torch.Tensor] = []
        with self._hook(at, captured=captured):
            logits = self.model(**model_inputs(batch)).logits
        return logits, self._single(captured, at)

    def forward_from(self, z: torch.Tensor, batch: Mapping[str, Any], at: str = "embedding_output") -> torch.Tensor:
        """Logits of the rest of the model with the tensor at `at` replaced by `z`."""
        fired: list[torch.Tensor] = []
        with self._hook(at, captured=fired, replace=z):
            logits = self.model(**model_inputs(batch)).logits
        self._single(fired, at)
        return logits

    # ----------------------------------------------------------------------------------
    def _single(self, captured: list[torch.Tensor], at: str) -> torch.Tensor:
        if len(captured) != 1:
            raise UnsupportedModelError(
                f"{self.model_class}: the perturbation point {at!r} was reached "
                f"{len(captured)} times in one forward (expected once)"
            )
        return captured[0]

    @contextlib.contextmanager
    def _hook(
        self, at: str, *, captured: list, replace: torch.Tensor | None = None, stop: bool = False
    ) -> Iterator[None]:
        module = self.module_at(at)
        if at == "pre_layernorm":
            # The LayerNorm's *input*: a forward pre-hook sees and may swap the argument.
            def pre_hook(_module, args):
                captured.append(args[0])
                if stop:
                    raise _StopForward
                if replace is not None:
                    _check_shape(replace, args[0], at)
                    return (replace.to(args[0].dtype),) + tuple(args[1:])
                return None

            handle = module.register_forward_pre_hook(pre_hook)
        else:

            def hook(_module, _args, output):
                captured.append(output)
                if stop:
                    raise _StopForward
                if replace is not None:
                    _check_shape(replace, output, at)
                    return replace.to(output.dtype)
                return None

            handle = module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


def _check_shape(new: torch.Tensor, old: torch.Tensor, at: str) -> None:
    if new.shape != old.shape:
        raise ValueError(
            f"tensor for perturb_at={at!r} has shape {tuple(new.shape)}, the model produces {tuple(old.shape)} there"
        )


def _find_word_embeddings(embeddings: nn.Module, model_class: str) -> nn.Embedding:
    named = getattr(embeddings, "word_embeddings", None)
    if isinstance(named, nn.Embedding):
        return named
    lookups = [m for m in embeddings.children() if isinstance(m, nn.Embedding)]
    if lookups:
        # The word lookup is the largest table (vocabulary >> positions, types).
        return max(lookups, key=lambda m: m.num_embeddings)
    raise UnsupportedModelError(f"{model_class}: the embedding block has no nn.Embedding word lookup")


def _find_layer_norm(embeddings: nn.Module) -> nn.Module | None:
    for name in ("LayerNorm", "layer_norm", "norm"):
        module = getattr(embeddings, name, None)
        if isinstance(module, nn.Module):
            return module
    for module in embeddings.children():
        # DeBERTa v1 ships its own LayerNorm class; match by type or by class name.
        if isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__:
            return module
    return None
