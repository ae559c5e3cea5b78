"""Vocabularies (objects, verbs, classes, phrases, prior, zero-shot splits) and prompt templates."""
from hoi_mllm.prompts.vocabulary import (
    Split,
    Vocabulary,
    VocabularyError,
    coco_categories,
    load_vocabulary,
    normalise_name,
)

__all__ = ["Split", "Vocabulary", "VocabularyError", "coco_categories", "load_vocabulary", "normalise_name"]
