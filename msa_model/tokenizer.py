"""Caption tokenizers: a pretrained one by name/path, or a WordPiece vocabulary trained here.

A randomly initialised text encoder still needs a vocabulary; training a small WordPiece model on
the training captions takes a fraction of a second, is deterministic, and is saved with the run
as a ``tokenizer.json`` string (no pickling).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from msa_model.config import TextTowerConfig

__all__ = ["train_wordpiece", "load_tokenizer", "tokenizer_from_json", "build_tokenizer"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(captions: Sequence[str], vocab_size: int) -> Tokenizer:
    """Train an uncased BERT-style WordPiece tokenizer on ``captions`` (deterministic)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(sorted(set(captions)), trainer=trainer)
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
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
        return AutoTokenizer.from_pretrained(str(path) if path.is_dir() else name_or_path)
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
        return load_tokenizer(source)
    return tokenizer_from_json(train_wordpiece(train_captions, cfg.vocab_size).to_str())
