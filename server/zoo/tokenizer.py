"""A character-level tokenizer saved as a standard ``tokenizer.json``.

Characters are the right unit for the arithmetic domains (every digit is its own token) and
the file loads with the ``tokenizers`` library alone, which is all the edge has.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from fedgrpo.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
ALPHABET = (
    string.digits + string.ascii_lowercase + string.ascii_uppercase + " \n+-*/%=,.:;?()[]{}<>!'\"_"
)
# by the recipe's ``tokenizer`` name; new characters only ever go at the end (ids stay put)
ALPHABETS = {"char-v1": ALPHABET, "char-v2": ALPHABET + "\\$^#&|"}


def alphabet(name: str) -> str:
    """The characters of tokenizer ``name`` (``char-v1``: arithmetic; ``char-v2``: + LaTeX)."""
    try:
        return ALPHABETS[name]
    except KeyError:
        raise ConfigError(f"unknown zoo tokenizer {name!r}; known: {', '.join(ALPHABETS)}") from None


def build_char_tokenizer(alphabet: str = ALPHABET) -> Tokenizer:
    """A ``tokenizers.Tokenizer``: one token per character, ``<bos>`` prepended on encode."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in dict.fromkeys(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # type: ignore[assignment]
    tok.decoder = decoders.Fuse()  # type: ignore[assignment]
    tok.post_processor = processors.TemplateProcessing(  # type: ignore[assignment]
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tok


def wrap_for_transformers(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """The same tokenizer as a transformers ``PreTrainedTokenizerFast`` (left padding)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
