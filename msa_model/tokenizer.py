"""Caption tokenizers: a pretrained one by name/path, or a WordPiece vocabulary trained here.

A randomly initialised text encoder still needs a vocabulary; building a small WordPiece vocabulary
from the training captions takes a fraction of a second, is deterministic, and is saved with each
checkpoint (``save_pretrained``; no pickling).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from msa_model.config import TextTowerConfig
from msa_model.weights import RemoteCodeRefusedError, resolve_resource

__all__ = ["train_wordpiece", "load_tokenizer", "tokenizer_from_json", "build_tokenizer"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(captions: Sequence[str], vocab_size: int) -> Tokenizer:
    """An uncased BERT-style WordPiece tokenizer whose vocabulary comes from ``captions``.

    The vocabulary holds the special tokens, every character seen (as a word start and as a
    ``##`` continuation, so no word maps to [UNK]) and then the most frequent whole words, ties
    broken alphabetically. It is a pure function of the caption multiset: the ``tokenizers``
    WordPiece trainer breaks ties differently from run to run, which would make the same seed
    give a different model.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(
            w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption))
        )
    chars = sorted({ch for word in counts for ch in word})
    vocab = SPECIAL_TOKENS + chars + [f"##{ch}" for ch in chars]
    room = max(0, vocab_size - len(vocab))
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))[:room]
    ids = {token: i for i, token in enumerate(vocab + words)}
    tok = Tokenizer(models.WordPiece(vocab=ids, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.BertProcessing(("[SEP]", ids["[SEP]"]), ("[CLS]", ids["[CLS]"]))
    return tok


def tokenizer_from_json(text: str) -> PreTrainedTokenizerFast:
    """Wrap a serialised ``tokenizers`` JSON as a transformers fast tokenizer."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(text),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """A fast tokenizer from a ``tokenizer.json`` file, a local directory or a cached HF id."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return tokenizer_from_json(path.read_text())
    try:
        return AutoTokenizer.from_pretrained(
            str(path) if path.is_dir() else name_or_path, trust_remote_code=False
        )
    except ValueError as exc:  # auto_map to a .py in the folder: never run, refused
        raise RemoteCodeRefusedError(
            f"tokenizer {name_or_path!r} asks to run its own Python code (auto_map in its "
            f"config); msa never runs code from a model folder: {str(exc).splitlines()[0]}"
        ) from exc
    except OSError as exc:
        raise FileNotFoundError(
            f"tokenizer {name_or_path!r} is neither a local file/directory nor in the Hugging "
            f"Face cache; copy the model folder here and give its path, or set "
            f"model.text.tokenizer: null to train a WordPiece vocabulary on the captions"
        ) from exc


def build_tokenizer(cfg: TextTowerConfig, train_captions: Sequence[str]) -> PreTrainedTokenizerBase:
    """The tokenizer a run uses: ``cfg.tokenizer``, else the encoder's own, else WordPiece."""
    source = cfg.tokenizer or cfg.name
    if source is not None:
        return load_tokenizer(resolve_resource(source, "model.text.tokenizer or model.text.name"))
    return tokenizer_from_json(train_wordpiece(train_captions, cfg.vocab_size).to_str())
