"""A tokenizer made in code for ``tiny-llava``, and our special tokens for every tokenizer.

The Qwen presets and ``tiny-llava-onevision`` use the real Qwen2 / Qwen2.5 tokenizer built offline
(:mod:`hoi_mllm.models.qwen_tokenizer`). ``tiny-llava`` cannot get its Vicuna tokenizer offline, so
:func:`build_tokenizer` trains a small byte-level BPE (``tokenizers`` library) on a corpus made of
the verb phrases, verb and object names of the built-in vocabularies (plus any vocabulary passed
in), the words our prompts use, digits and punctuation. Byte-level BPE encodes any text (unknown
words fall back to bytes), so a prompt outside the corpus still tokenizes, just into more pieces.
Training is deterministic: the same corpus gives the same vocabulary.

Every tokenizer, real or made here, gets our special tokens (:func:`add_special_tokens`): the pair
tokens ``<|pair_0|>``, ``<|pair_1|>``, ..., the match token ``<|match|>`` and the answer token
``<|answer|>``. Their embeddings are placeholders: the recogniser replaces them with its own.
"""
from __future__ import annotations

import string
from typing import Iterable, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAIR_TOKEN = "<|pair_{i}|>"
MATCH_TOKEN = "<|match|>"
ANSWER_TOKEN = "<|answer|>"
DEFAULT_NUM_PAIR_TOKENS = 8

# the special tokens of each tokenizer style, in id order (the first ones get the lowest ids)
QWEN_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
LLAVA_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
ONEVISION_TOKENS = QWEN_TOKENS + ("<image>", "<video>")
STYLES = {"qwen": QWEN_TOKENS, "llava": LLAVA_TOKENS, "onevision": ONEVISION_TOKENS}

# bos / eos / pad / unk of each style (None: the style has none)
STYLE_ROLES = {
    "qwen": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None},
    "llava": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
    "onevision": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None},
}

# words of chat formats and of the questions the recogniser and the training-free mode ask
PROMPT_WORDS = (
    "system user assistant USER ASSISTANT You are a helpful assistant. "
    "What is the person doing with the object? What is the human doing? Which of these actions "
    "does the person perform on the object in the box? Answer with one of the candidates. "
    "The person in the box and the object in the box interact: the person is "
    "question answer candidates candidate actions action interaction interactions pair pairs "
    "person human object objects box boxes region image picture photo left right top bottom "
    "between with on in at of to a an the and or is are no not none nothing near next "
    "Is there any interaction between them? Yes yes No no label bbox_2d"
)


def special_tokens(num_pair_tokens: int = DEFAULT_NUM_PAIR_TOKENS) -> list[str]:
    """Our special tokens: ``num_pair_tokens`` pair tokens, then the match and the answer token."""
    if num_pair_tokens < 1:
        raise ValueError(f"num_pair_tokens must be >= 1, got {num_pair_tokens}")
    return [PAIR_TOKEN.format(i=i) for i in range(num_pair_tokens)] + [MATCH_TOKEN, ANSWER_TOKEN]


def add_special_tokens(tokenizer: PreTrainedTokenizerBase, num_pair_tokens: int = DEFAULT_NUM_PAIR_TOKENS) -> list[int]:
    """Add our special tokens to ``tokenizer`` (idempotent) and return their ids in order.

    The caller resizes the model's embedding matrix if an id exceeds it (see ``loading.py``).
    """
    tokens = special_tokens(num_pair_tokens)
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return [int(tokenizer.convert_tokens_to_ids(t)) for t in tokens]


def corpus_texts(vocabularies: Iterable = ("hico-det", "vcoco"), extra_texts: Sequence[str] = ()) -> list[str]:
    """The training corpus: vocabulary phrases and names, prompt words, COCO names, digits, punctuation."""
    from hoi_mllm.prompts.vocabulary import coco_categories, load_vocabulary

    texts: list[str] = [PROMPT_WORDS]
    for vocab in vocabularies:
        v = load_vocabulary(vocab)
        texts.extend(v.phrases)
        texts.extend(name.replace("_", " ") for name in (*v.objects, *v.verbs))
    texts.extend(coco_categories()["names"])
    texts.extend(extra_texts)
    # numbers as boxes are written ("(12,345),(678,901)", "[0.12, 0.50, 0.73, 0.99]"), punctuation
    texts.extend(f"({i},{i + 7}),({i * 3},{i * 2})" for i in range(0, 1000, 37))
    texts.extend(f"[0.{i:02d}, 0.{(i * 7) % 100:02d}]" for i in range(100))
    texts.append(" ".join(string.digits) + " " + string.punctuation)
    return texts


def build_tokenizer(
    style: str = "qwen",
    vocabularies: Iterable = ("hico-det", "vcoco"),
    extra_texts: Sequence[str] = (),
    vocab_size: int = 2048,
    num_pair_tokens: int = DEFAULT_NUM_PAIR_TOKENS,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer in code and wrap it in ``PreTrainedTokenizerFast``.

    Args:
        style: which family's special tokens to include: ``qwen`` (Qwen2-VL / Qwen2.5-VL chat,
            vision and grounding tokens), ``llava`` (``<s>``, ``</s>``, ``<image>``), ``onevision``
            (Qwen tokens plus ``<image>`` / ``<video>``).
        vocabularies: vocabularies (names, paths or objects) whose phrases and names join the corpus.
        extra_texts: more corpus text (e.g. a synthetic world's phrases).
        vocab_size: upper bound on the vocabulary size, special tokens included.
        num_pair_tokens: how many pair tokens (``<|pair_i|>``) to add.

    Returns:
        A fast tokenizer whose special tokens (family's, then ours) have the lowest ids.
    """
    if style not in STYLES:
        raise ValueError(f"unknown tokenizer style {style!r}; allowed: {', '.join(STYLES)}")
    specials = list(STYLES[style]) + special_tokens(num_pair_tokens)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts(vocabularies, extra_texts), trainer=trainer)
    roles = {k: v for k, v in STYLE_ROLES[style].items() if v is not None}
    family_extra = [t for t in STYLES[style] if t not in roles.values()]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        extra_special_tokens=family_extra + special_tokens(num_pair_tokens),
        clean_up_tokenization_spaces=False,
        **roles,
    )
