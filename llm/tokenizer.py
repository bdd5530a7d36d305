"""A character-level tokenizer built locally (no model hub).

Every character of `CHARS` is one token; anything else maps to `<unk>`.
The tokenizer is made with the `tokenizers` library (a WordLevel model over
single characters, split by a one-character regex, joined back by a `Fuse`
decoder) and wrapped as a `transformers.PreTrainedTokenizerFast`, so it saves
with `save_pretrained` and loads back offline with `load_char_tokenizer(path)`
(`models.load_model_and_tokenizer` uses it; `AutoTokenizer` would drop the
spaces once a Qwen2 `config.json` sits beside the tokenizer, see there).

Conventions:
- padding is on the LEFT, so a batch of prompts ends at the same column and
  `model.generate` appends new tokens right after each prompt;
- `add_special_tokens=True` (the default) prepends `<bos>`; no `<eos>` is added
  automatically -- training code appends `tokenizer.eos_token_id` to targets.

transformers 5.x note: `PreTrainedTokenizerFast` is an alias of
`TokenizersBackend`; the saved `tokenizer_config.json` names that class.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
"""Special tokens; their ids are 0, 1, 2, 3 in this order."""

CHARS: str = (
    string.digits
    + "+-*/=^%.,$# ()[]{}<>:;!?'\"\\_\n"
    + string.ascii_lowercase
    + string.ascii_uppercase
)
"""Characters with their own token (arithmetic, GSM8K- and MATH-style text)."""

EXTRA_BLOCK = 0x4E00
"""First code point of the extra tokens (CJK ideographs: printable, one character, no case or spacing)."""

_CHAR_SPLIT = r"[\s\S]"  # one piece per character; `.` would not match newlines


def extra_chars(n: int) -> str:
    """``n`` characters outside `CHARS` (from `EXTRA_BLOCK` on): tokens a task never writes.

    A tiny model over `CHARS + extra_chars(n)` has a vocabulary of about 95 + n; the extra
    tokens are the long tail a real LLM samples from at temperature 1.
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 20000:
        raise ValueError(f"extra tokens must be an integer in [0, 20000], got {n!r}")
    return "".join(chr(EXTRA_BLOCK + i) for i in range(n))


def build_vocab(chars: str = CHARS) -> dict[str, int]:
    """Token -> id: special tokens first, then each distinct character of `chars`."""
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        if ch not in vocab:
            vocab[ch] = len(vocab)
    return vocab


def build_char_tokenizer(chars: str = CHARS) -> PreTrainedTokenizerFast:
    """Build the character tokenizer (left padding, `<bos>` prepended).

    Args:
        chars: the characters that get a token; others become `<unk>`.

    Returns:
        A `PreTrainedTokenizerFast` with pad/bos/eos/unk set and
        `padding_side="left"`; `len(tok)` is the vocabulary size.
    """
    vocab = build_vocab(chars)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # One token per character; `[\s\S]` also matches newlines (`.` would not).
    core.pre_tokenizer = pre_tokenizers.Split(Regex(_CHAR_SPLIT), behavior="isolated")
    core.decoder = decoders.Fuse()  # join tokens with no separator
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A $B",
        special_tokens=[(BOS, vocab[BOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def is_char_tokenizer_dir(path: str | Path) -> bool:
    """True if `path` is a local directory holding this module's character tokenizer.

    Recognised by its `tokenizer.json` pre-tokenizer (one split per character).
    """
    file = Path(path).expanduser() / "tokenizer.json"
    if not file.is_file():
        return False
    try:
        pre = json.loads(file.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return False
    return pre.get("type") == "Split" and pre.get("pattern") == {"Regex": _CHAR_SPLIT}


def load_char_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved character tokenizer exactly as it was built.

    `AutoTokenizer` is not enough once a model's `config.json` sits beside it: for
    some model types (Qwen2 in transformers 5) it instantiates the model family's own
    tokenizer class, which replaces the pre-tokenizer with a byte-level one and
    silently drops every whitespace character. Loading the class directly keeps
    the saved `tokenizer.json` as it is.
    """
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    tok.padding_side = "left"
    return tok


def save_char_tokenizer(out_dir: str | Path, chars: str = CHARS) -> Path:
    """Build the tokenizer and `save_pretrained` it to `out_dir`; returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_char_tokenizer(chars).save_pretrained(str(out))
    return out
