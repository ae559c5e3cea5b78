"""The real Qwen2 / Qwen2.5-VL tokenizer built offline: ids and chat template against published facts.

Expected ids are taken from published material, not from this code: input_ids dumps of
Qwen2-VL / Qwen2.5-VL prompts ("<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n...",
"Describe this image.", "hello world"), transformers' Qwen2-Audio integration test (same
tokenizer: "Audio 1: ", "What's that sound?"), the published config.json / tokenizer_config.json
of Qwen/Qwen2.5-VL-3B-Instruct (special-token ids) and the Qwen2 vocab.json (byte tokens).
"""
import unicodedata

import pytest

from hoi_mllm.models.qwen_tokenizer import QWEN_VL_ADDED, qwen_tokenizer

SYSTEM = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]
PUBLISHED = {
    "Hello world": [9707, 1879],
    "Hello": [9707],
    "hello world": [14990, 1879],
    "Describe this image.": [74785, 419, 2168, 13],
    "Audio 1: ": [14755, 220, 16, 25, 220],
    "What's that sound?": [3838, 594, 429, 5112, 30],
    "\n": [198],
    "0123456789": list(range(15, 25)),  # digits split one by one (Qwen's pattern), byte tokens 15..24
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n": SYSTEM,
    "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n":
        [151644, 872, 198, 14990, 1879, 151645, 198, 151644, 77091, 198],
    "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n":
        [151652, 151655, 151655, 151653, 74785, 419, 2168, 13, 151645, 198],
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n": [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198],
}
# config.json of Qwen2.5-VL-3B-Instruct
CONFIG_IDS = {"<|endoftext|>": 151643, "<|im_end|>": 151645, "<|vision_start|>": 151652, "<|vision_end|>": 151653,
              "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656}


@pytest.fixture(scope="module")
def tok():
    return qwen_tokenizer("qwen2.5-vl")


@pytest.mark.parametrize("text", list(PUBLISHED))
def test_published_ids(tok, text):
    assert tok.encode(text, add_special_tokens=False) == PUBLISHED[text]
    assert tok.decode(PUBLISHED[text]) == text


def test_special_token_ids_and_roles(tok):
    for token, i in CONFIG_IDS.items():
        assert tok.convert_tokens_to_ids(token) == i
    # every added token at its fixed id from 151643; tool / FIM tokens are not special
    for offset, (content, special) in enumerate(QWEN_VL_ADDED):
        assert tok.convert_tokens_to_ids(content) == 151643 + offset
        assert (content in tok.all_special_tokens) == special
    assert len(tok) == 151665
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert tok.encode("<|im_start|>", add_special_tokens=False) == [151644]  # no BOS, no post-processing


def test_nfc_normalisation(tok):
    composed, decomposed = "café", unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    assert tok.encode(composed, add_special_tokens=False) == tok.encode(decomposed, add_special_tokens=False)


def test_chat_template_renders_published_prefix(tok):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n<|im_start|>assistant\n")
    # a string content and a system message of one's own
    text = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "hello world"}],
                                   tokenize=False, add_generation_prompt=False)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n"


def test_qwen2_vl_and_onevision_families():
    q2 = qwen_tokenizer("qwen2-vl")
    assert len(q2) == 151657 and q2.convert_tokens_to_ids("<|video_pad|>") == 151656
    assert q2.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    ov = qwen_tokenizer("llava-onevision")
    assert ov.convert_tokens_to_ids(["<|im_end|>", "<image>", "<video>"]) == [151645, 151646, 151647]
    text = ov.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
                                  tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="allowed: qwen2-vl, qwen2.5-vl, llava-onevision"):
        qwen_tokenizer("qwen3")


def test_fresh_tokenizer_each_call_and_our_tokens_after_the_family(tok):
    from hoi_mllm.models.tokenizer import add_special_tokens, special_tokens

    mine = qwen_tokenizer("qwen2.5-vl")
    ids = add_special_tokens(mine, 8)
    assert ids == list(range(151665, 151675))
    assert len(tok) == 151665  # the module's tokenizer did not change
    riding = tok.encode(" riding", add_special_tokens=False)
    assert mine.encode("<|pair_3|> riding<|match|>", add_special_tokens=False) == [151668, *riding, 151673]
    assert mine.convert_ids_to_tokens(ids) == special_tokens(8)


def test_presets_use_the_real_tokenizer():
    from hoi_mllm.models.presets import preset_tokenizer

    for name, length in (("tiny-qwen2.5-vl", 151675), ("tiny-qwen2-vl", 151667), ("tiny-llava-onevision", 151658)):
        t = preset_tokenizer(name)
        assert len(t) == length
        assert t.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert len(preset_tokenizer("tiny-llava")) <= 2048  # trained in code


def test_adapter_chat_format_is_the_templates(tok):
    from hoi_mllm.models.qwen_vl import QwenVLBackbone

    chat = QwenVLBackbone.chat
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == (chat.user_start + "<|vision_start|><|image_pad|><|vision_end|>Q" + chat.user_end
                    + chat.assistant_start)
