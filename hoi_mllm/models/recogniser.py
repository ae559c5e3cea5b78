"""The interaction recogniser: SAP pair tokens + one-pass deterministic matching over candidate phrases.

For one image and its human-object pairs (:class:`~hoi_mllm.records.Pairs`), the image prefix is
encoded once; every pair gets a suffix whose ``<|pair_i|>`` placeholders are replaced by the
pair tokens of :class:`~hoi_mllm.models.sap.SpatialAwarePooling`, and the candidate verb phrases
of the pair's object class (the vocabulary's prior) are scored in one forward pass, two ways
(``RecogniserConfig.candidate_placement``):

``suffix`` (DA-HOI)
    suffix = ``[grounding] <pair tokens> question cand_1 <match> cand_2 <match> ...``;
    ``logit_c = scale * cos(h_pair, h_match_c) + bias``, ``h_pair`` the state at the last pair token.
``prefix``
    the candidates of every object class in the image go once into the shared prefix, each
    followed by ``<match>``; suffix = ``[grounding] <pair tokens> question answer <answer>``;
    ``logit_c = scale * cos(h_answer, h_match_c) + bias``.

``suffix`` is the default: it is the more accurate of the two. Measured on the synthetic world
(1,600 training images, recipe ``synthetic`` at 600 steps, same seed, 100 held-out training images, ground-truth
boxes): held-out Full mAP 61.9 with ``suffix`` against 23.6 with ``prefix`` (Seen 62.1 / 25.0, Unseen
60.6 / 14.9), while ``prefix`` trained 1.3x faster (33.0 against 24.7 images/s) and scores 1.4x faster
(``benchmarks/recognizer.py``): in ``prefix`` the candidates' states cannot see the pair, so the
single answer state must carry the whole decision.

``[grounding]`` (``RecogniserConfig.grounded``, DA-HOI's prompt): the template's
``matching.grounding`` with the person's and the object's boxes as text in the backbone family's
grounding convention (:meth:`Backbone.box_text`); it is per pair, so it lives in the suffix and the
shared image prefix stays exact.

``<match>`` and ``<answer>`` get embeddings owned by the recogniser (not the LM's embedding
matrix). Scores are multi-label sigmoids; no text is generated. Three run modes give the same
scores: ``cache`` (prefix key-value cache, suffixes batched and chunked: inference),
``packed`` (one packed sequence with a block mask: training, gradient checkpointing) and
``unshared`` (every pair with its own full prompt: the reference).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
import torch
from torch import Tensor, nn

from hoi_mllm.models.backbone import Backbone, ImageEncoding
from hoi_mllm.models.matching import (
    MatchHead,
    RecognitionOutput,
    candidate_lists,
    gather_states,
    length_chunks,
    pad_candidates,
    pad_ids,
    run_chunks,
    token_positions,
)
from hoi_mllm.models.prompting import PromptIds, load_templates
from hoi_mllm.models.sap import SAPConfig, SpatialAwarePooling
from hoi_mllm.prompts.vocabulary import VocabularyError, load_vocabulary
from hoi_mllm.records import Pairs

PLACEMENTS = ("suffix", "prefix")
MATCH_INITS = ("random", "mean")
SAP_FIRST_PASS_CHUNK = 512  # pairs per SAP call in the interactiveness first pass
BRANCH_SCORES = ("mllm", "sap", "mean")  # which verb scores inference reports when sap_branch is on
MODES = ("cache", "packed", "unshared")


@dataclass(frozen=True)
class RecogniserConfig:
    """The recogniser.

    Attributes:
        sap: spatial-aware pooling (:class:`SAPConfig`).
        candidate_placement: ``suffix`` (candidates after each pair's tokens, DA-HOI) or ``prefix``
            (candidates once per object class in the shared prefix, one answer token per pair).
        template: prompt template, a built-in name (``default``) or a JSON path.
        grounded: each pair's suffix opens with the template's ``matching.grounding`` text, the
            person's and the object's boxes in the backbone family's grounding convention
            (``Backbone.box_text``), before the pair tokens, as DA-HOI's prompt states them; the
            shared image prefix is unchanged.
        match_init: initial ``<|match|>`` / ``<|answer|>`` embeddings: ``random`` (normal at the
            LM's embedding scale) or ``mean`` (the mean row of the LM's input embeddings, DA-HOI's
            ``hoi_embedding_token``).
        max_pairs_per_pass: suffixes per forward in ``cache`` / ``unshared`` mode (more pairs are
            chunked; on out-of-memory the chunk is halved and retried).
        max_padding: a chunk of suffixes closes before its padding tokens would exceed this share of
            its padded tokens (0: only rows of one length share a forward; more: fewer, wider forwards).
        shuffle_candidates: in training mode, permute each pair's candidates with a seeded generator.
        seed: seed of the recogniser's own initial weights and of the shuffle generator.
        scale_init, scale_min, scale_max: the learnable cosine scale and its clamp.
        bias_init: initial logit bias.
    """

    sap: SAPConfig = field(default_factory=SAPConfig, metadata={"help": "spatial-aware pooling"})
    candidate_placement: str = field(default="suffix", metadata={"help": "suffix | prefix"})
    template: str = field(default="default", metadata={"help": "prompt template name or path"})
    grounded: bool = field(default=False, metadata={"help": "state the pair's boxes as text in its suffix"})
    match_init: str = field(default="random", metadata={"help": "random | mean (DA-HOI) match embedding init"})
    max_pairs_per_pass: int = field(default=32, metadata={"help": "suffixes per forward (chunking)"})
    max_padding: float = field(default=0.1, metadata={"help": "largest share of padding tokens in a chunk"})
    shuffle_candidates: bool = field(default=False, metadata={"help": "shuffle candidates in training"})
    sap_branch: bool = field(default=False, metadata={
        "help": "DA-HOI's second branch: sap_verb_projector (MLP on SAP's pair feature) scored against the <match> "
                "states with the same scale and bias, trained with its own loss (loss.sap_branch_weight)"})
    branch_scores: str = field(default="mean", metadata={
        "help": "with sap_branch, the reported verb_scores: mllm | sap | mean (DA-HOI calculate_hico_map.py: the "
                "mean of the two branches' sigmoids)"})
    seed: int = field(default=0, metadata={"help": "seed of own weights and shuffling"})
    scale_init: float = field(default=10.0, metadata={"help": "initial cosine scale"})
    scale_min: float = field(default=1.0, metadata={"help": "lower clamp of the scale"})
    scale_max: float = field(default=100.0, metadata={"help": "upper clamp of the scale"})
    bias_init: float = field(default=0.0, metadata={"help": "initial logit bias"})

    def __post_init__(self):
        if isinstance(self.sap, dict):
            object.__setattr__(self, "sap", SAPConfig(**self.sap))
        if self.candidate_placement not in PLACEMENTS:
            raise ValueError(f"candidate_placement {self.candidate_placement!r} not allowed; "
                             f"allowed: {', '.join(PLACEMENTS)}")
        if self.match_init not in MATCH_INITS:
            raise ValueError(f"match_init {self.match_init!r} not allowed; allowed: {', '.join(MATCH_INITS)}")
        if self.branch_scores not in BRANCH_SCORES:
            raise ValueError(f"branch_scores {self.branch_scores!r} not allowed; allowed: {', '.join(BRANCH_SCORES)}")
        if int(self.max_pairs_per_pass) < 1:
            raise ValueError(f"max_pairs_per_pass must be >= 1, got {self.max_pairs_per_pass}")
        if not 0.0 <= float(self.max_padding) < 1.0:
            raise ValueError(f"max_padding must lie in [0, 1), got {self.max_padding}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RecogniserConfig":
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown recogniser option(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        return cls(**data)


def branch_scores(logits: Tensor, sap_logits: Tensor | None, how: str = "mean") -> Tensor:
    """Verb probabilities from the MLLM branch's and (when present) the SAP branch's logits.

    ``mllm``: ``sigmoid(logits)``; ``sap``: ``sigmoid(sap_logits)``; ``mean``: their average, as DA-HOI's
    ``calculate_hico_map.py`` averages the two branches' scores. Without a SAP branch: the MLLM's.
    """
    if sap_logits is None or how == "mllm":
        return torch.sigmoid(logits)
    sap = torch.sigmoid(sap_logits.to(logits.dtype))
    return sap if how == "sap" else (torch.sigmoid(logits) + sap) / 2


def extend_encoding(backbone: Backbone, enc: ImageEncoding, ids: Tensor, embeds: Tensor) -> ImageEncoding:
    """Append text (``ids [B]``, ``embeds [B, D]``) to a prefix, with the positions text gets after it.

    Follows the backbone's ``next_position`` rule (text token ``j`` at ``next_position + j`` on
    every axis). ``extra`` is kept as it was: the run paths read only ids, embeddings and positions.
    """
    b = int(ids.shape[0])
    positions = backbone.text_positions(enc.next_position, b, 1)[:, 0].to(enc.position_ids.device)  # [R, B]
    return replace(enc, input_ids=torch.cat([enc.input_ids, ids.to(enc.input_ids.device)]),
                   inputs_embeds=torch.cat([enc.inputs_embeds, embeds.to(enc.inputs_embeds.dtype)]),
                   position_ids=torch.cat([enc.position_ids, positions], 1), next_position=enc.next_position + b)


def replace_tokens(embeds: Tensor, ids: Tensor, replacements: dict[int, Tensor]) -> Tensor:
    """``embeds [P, L, D]`` with the rows where ``ids [P, L] == k`` taken from ``replacements[k]``
    (broadcastable to ``[P, L, D]``, e.g. ``[D]`` or ``[P, 1, D]``); differentiable in both."""
    for token, value in replacements.items():
        embeds = torch.where((ids == token)[..., None], value.to(embeds.dtype), embeds)
    return embeds


class HOIRecogniser(nn.Module):
    """SAP + one-pass deterministic matching on a backbone adapter (see the module docstring).

    Args:
        backbone: a :class:`~hoi_mllm.models.backbone.Backbone` (its tokenizer holds the special tokens).
        vocabulary: a vocabulary name, path or object: candidates come from its prior.
        config: :class:`RecogniserConfig`.

    Attributes:
        allowed_classes: when set (e.g. the seen classes of a split), candidates are restricted to it
            unless a call passes its own ``allowed_classes``.
    """

    def __init__(self, backbone: Backbone, vocabulary, config: RecogniserConfig = RecogniserConfig()):
        super().__init__()
        if config.sap.num_pair_tokens > backbone.num_pair_tokens:
            raise ValueError(f"sap.num_pair_tokens {config.sap.num_pair_tokens} exceeds the "
                             f"{backbone.num_pair_tokens} pair tokens of the backbone's tokenizer")
        self.backbone = backbone
        self.vocabulary = load_vocabulary(vocabulary)
        self.config = config
        self.templates = load_templates(config.template)
        if config.grounded:
            self.templates.check_grounding()
        self.prompt_ids = PromptIds(backbone, self.vocabulary, self.templates)
        self.allowed_classes: frozenset[int] | None = None
        d = backbone.hidden_size
        scale = float(backbone.model.get_input_embeddings().weight.detach().float().std())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.sap = SpatialAwarePooling(config.sap, d, embed_scale=scale)
            self.match_embedding = nn.Parameter(torch.randn(d) * scale)
            self.answer_embedding = nn.Parameter(torch.randn(d) * scale)
            h = config.sap.hidden_size  # DA-HOI: Linear(512, 512), GELU, Linear(512, LM width)
            self.sap_verb_projector = (nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, d))
                                       if config.sap_branch else None)
        if config.match_init == "mean":
            mean = backbone.model.get_input_embeddings().weight.detach().float().mean(0).cpu()
            self.match_embedding.data.copy_(mean)
            self.answer_embedding.data.copy_(mean)
        self.match_head = MatchHead(config.scale_init, config.scale_min, config.scale_max, config.bias_init)
        for module in (self.sap, self.match_head, self.sap_verb_projector):
            if module is not None:
                module.to(backbone.device)
        self.match_embedding.data = self.match_embedding.data.to(backbone.device)
        self.answer_embedding.data = self.answer_embedding.data.to(backbone.device)
        self.sap_verb_classifier: nn.Linear | None = None  # train.stage=sap only (add_verb_classifier)
        self._generator = torch.Generator().manual_seed(config.seed)
        self.pad_id = int(backbone.tokenizer.pad_token_id if backbone.tokenizer.pad_token_id is not None else 0)

    def add_verb_classifier(self, num_verbs: int) -> nn.Linear:
        """SAP pre-training's verb classifier (DA-HOI ``SAP/models/interaction.py``): one logit per verb of the
        vocabulary from SAP's pair feature, read at the verbs the object-verb prior allows. Only the SAP stage
        (``train.stage=sap``) adds it; its weights go to ``sap.safetensors``, never into a recogniser folder."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 1)
            self.sap_verb_classifier = nn.Linear(self.config.sap.hidden_size, int(num_verbs)).to(self.backbone.device)
        return self.sap_verb_classifier

    # ------------------------------------------------------------------ state owned by the recogniser
    def own_state_dict(self) -> dict[str, Tensor]:
        """Weights the recogniser adds to the backbone (SAP, special embeddings, scale, bias)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def own_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    # ------------------------------------------------------------------ inputs
    def encode(self, image) -> ImageEncoding:
        """The image prefix of the matching prompt (chat opening, image, instruction)."""
        tpl = self.templates.matching
        return self.backbone.encode_prefix(image, tpl.text_before_image, tpl.instruction)

    def check_objects(self, labels: Tensor) -> list[int]:
        objects = [int(o) for o in torch.as_tensor(labels).tolist()]
        bad = [o for o in objects if not 0 <= o < self.vocabulary.num_objects]
        if bad:
            raise VocabularyError(f"pair object label(s) {sorted(set(bad))} outside the {self.vocabulary.name} "
                                  f"vocabulary (0..{self.vocabulary.num_objects - 1}); was the detector built "
                                  "for another vocabulary?")
        return objects

    def _embed(self, ids: Tensor, pair_tokens: Tensor) -> Tensor:
        """``ids [P, L]`` -> ``[P, L, D]`` with pair, match and answer tokens replaced."""
        ids = ids.to(self.backbone.device)
        embeds = self.backbone.embed(ids)
        pair_ids = self.prompt_ids.pair_ids[: self.config.sap.num_pair_tokens]
        reps = {pid: pair_tokens[:, k, None, :] for k, pid in enumerate(pair_ids)}
        reps[self.prompt_ids.match_id] = self.match_embedding
        reps[self.prompt_ids.answer_id] = self.answer_embedding
        return replace_tokens(embeds, ids, reps)

    def _pair_head(self) -> Tensor:
        return torch.tensor(self.prompt_ids.pair_ids[: self.config.sap.num_pair_tokens], dtype=torch.long)

    def _groundings(self, enc: ImageEncoding, pairs: Pairs, objects: list[int]) -> list[Tensor]:
        """Per pair, ``[G]`` ids of the grounding text that opens its suffix (empty unless ``grounded``)."""
        if not self.config.grounded:
            return [torch.zeros(0, dtype=torch.long)] * len(objects)
        hb, ob = torch.as_tensor(pairs.human_boxes), torch.as_tensor(pairs.object_boxes)
        box = self.backbone.box_text
        return [self.prompt_ids.grounding(box(hb[p], enc), box(ob[p], enc), o) for p, o in enumerate(objects)]

    # ------------------------------------------------------------------ forward
    def forward(self, image, pairs: Pairs, mode: str = "cache", allowed_classes=None,
                generator: torch.Generator | None = None, shuffle: bool | None = None) -> RecognitionOutput:
        """Score the candidates of every pair of one image.

        Args:
            image: a PIL image / ``[H, W, 3]`` uint8 array / ``[3, H, W]`` tensor, or an
                :class:`ImageEncoding` from :meth:`encode`.
            pairs: ``P`` pairs (boxes xyxy pixels of the original image, object labels of the vocabulary).
            mode: ``cache`` | ``packed`` | ``unshared`` (see the module docstring); gradients flow in all.
            allowed_classes: restrict candidates to these class ids (default: ``self.allowed_classes``).
            generator: generator of the candidate shuffle (default: the recogniser's seeded one).
            shuffle: shuffle candidates (default: ``config.shuffle_candidates and self.training``).
        Returns:
            :class:`RecognitionOutput`: ``candidates [P, Cmax]``, ``verb_logits [P, Cmax]``,
            ``verb_scores [P, Cmax]`` (sigmoid), ``interactiveness [P]`` logits.
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not allowed; allowed: {', '.join(MODES)}")
        objects = self.check_objects(pairs.object_labels)
        if not objects:
            return RecognitionOutput.empty(self.backbone.device)
        enc = image if isinstance(image, ImageEncoding) else self.encode(image)
        allowed = self.allowed_classes if allowed_classes is None else frozenset(int(c) for c in allowed_classes)
        if shuffle is None:
            shuffle = self.config.shuffle_candidates and self.training
        gen = (generator or self._generator) if shuffle else None
        sap = self.sap(enc.grid, torch.as_tensor(pairs.human_boxes), torch.as_tensor(pairs.object_boxes),
                       enc.image_size, enc.grid_scale)
        grounding = self._groundings(enc, pairs, objects)
        query = None if self.sap_verb_projector is None else self.sap_verb_projector(sap.features)  # [P, D]
        if self.config.candidate_placement == "suffix":
            candidates, logits, sap_logits = self._suffix_placement(enc, objects, grounding, sap.pair_tokens, allowed,
                                                                    gen, mode, query)
        else:
            candidates, logits, sap_logits = self._prefix_placement(enc, objects, grounding, sap.pair_tokens, allowed,
                                                                    gen, mode, query)
        valid = (candidates >= 0).to(logits.device)
        return RecognitionOutput(candidates.to(logits.device), logits,
                                 branch_scores(logits, sap_logits, self.config.branch_scores) * valid,
                                 sap.interactiveness, sap_logits)

    @torch.no_grad()
    def recognise(self, image, pairs: Pairs, allowed_classes=None) -> RecognitionOutput:
        """Inference: no gradients, cached prefix, pairs chunked by ``max_pairs_per_pass``, candidates in order."""
        return self.forward(image, pairs, mode="cache", allowed_classes=allowed_classes, shuffle=False)

    @torch.no_grad()
    def pair_interactiveness(self, image, pairs: Pairs) -> Tensor:
        """``[P]`` interactiveness logits of ``pairs`` from SAP alone, no language model: the cheap first pass of
        :func:`~hoi_mllm.pairs.select_pairs` (pass the :class:`ImageEncoding` from :meth:`encode` to reuse
        it for :meth:`recognise`). The same values :meth:`recognise` reports for these pairs."""
        self.check_objects(pairs.object_labels)
        enc = image if isinstance(image, ImageEncoding) else self.encode(image)
        human, obj = torch.as_tensor(pairs.human_boxes), torch.as_tensor(pairs.object_boxes)
        # chunked: a crowded HICO-DET image proposes thousands of pairs (6,903 at most on its test set), and
        # the scene-context decoder's attention grows with pairs x grid cells
        chunk = SAP_FIRST_PASS_CHUNK
        return torch.cat([self.sap(enc.grid, human[i:i + chunk], obj[i:i + chunk], enc.image_size,
                                   enc.grid_scale).interactiveness for i in range(0, max(len(human), 1), chunk)])

    def _run(self, enc: ImageEncoding, embeds: Tensor, lengths: Tensor, mode: str,
             prefix_hidden: bool = False) -> tuple[Tensor, Tensor | None]:
        """Suffixes ``[P, L, D]`` after ``enc`` -> (``[P, L, D]`` hidden, ``[T, D]`` prefix hidden or None).

        ``cache`` and ``unshared`` run rows in chunks of similar length (at most ``max_pairs_per_pass``,
        each trimmed to its longest row); ``packed`` runs all rows in one sequence.
        """
        if mode == "packed":
            out = self.backbone.run_packed(enc, embeds, lengths, return_prefix=prefix_hidden)
            return out if prefix_hidden else (out, None)
        state = self.backbone.run_prefix(enc) if mode == "cache" else None
        run = (lambda e: self.backbone.run_suffixes(state, e)) if state is not None else (
            lambda e: self.backbone.run_unshared(enc, e))
        hidden = self._run_rows(run, embeds, lengths)
        return hidden, (state.hidden if state is not None else None)

    def _run_rows(self, run, embeds: Tensor, lengths: Tensor) -> Tensor:
        """``run`` over length-sorted chunks of ``embeds [P, L, D]`` -> ``[P, L, D]`` (zeros past each chunk's width)."""
        width = embeds.shape[1]

        def rows(index: Tensor) -> Tensor:
            w = int(lengths[index].max())
            out = run(embeds[index.to(embeds.device), :w])  # [n, w, D]
            return torch.nn.functional.pad(out, (0, 0, 0, width - w))

        return run_chunks(rows, length_chunks(lengths, self.config.max_pairs_per_pass, self.config.max_padding))

    def _suffix_placement(self, enc, objects, grounding, pair_tokens, allowed, gen, mode, sap_query=None):
        ids_of = self.prompt_ids
        lists = candidate_lists(self.vocabulary, objects, allowed, gen)
        candidates = pad_candidates(lists)  # [P, C]
        match = torch.tensor([ids_of.match_id])
        head = self._pair_head()
        rows = [torch.cat([g, head, ids_of.question(o), *[t for c in cl for t in (ids_of.candidate(c), match)]])
                for g, o, cl in zip(grounding, objects, lists)]
        ids, lengths = pad_ids(rows, self.pad_id)  # [P, L], [P]
        hidden, _ = self._run(enc, self._embed(ids, pair_tokens), lengths, mode)  # [P, L, D]
        last_pair = torch.tensor([len(g) + head.numel() - 1 for g in grounding], device=hidden.device)
        query = hidden[torch.arange(len(objects), device=hidden.device), last_pair]  # [P, D] the last pair token
        keys = gather_states(hidden, token_positions(ids, ids_of.match_id, candidates.shape[1]))  # [P, C, D]
        return candidates, self.match_head(query, keys, candidates >= 0), self._sap_logits(sap_query, keys, candidates)

    def _sap_logits(self, sap_query: Tensor | None, keys: Tensor, candidates: Tensor) -> Tensor | None:
        """The second branch: ``scale * cos(sap_verb_projector(feature), h_match_c) + bias`` (or None when off)."""
        if sap_query is None:
            return None
        return self.match_head(sap_query.to(keys.dtype), keys, (candidates >= 0).to(keys.device))

    def _prefix_placement(self, enc, objects, grounding, pair_tokens, allowed, gen, mode, sap_query=None):
        ids_of = self.prompt_ids
        present = sorted(set(objects))
        per_object = dict(zip(present, candidate_lists(self.vocabulary, present, allowed, gen)))
        match = torch.tensor([ids_of.match_id])
        block_rows, slot_start, n = [], {}, 0
        for o in present:
            slot_start[o] = n
            n += len(per_object[o])
            block_rows += [ids_of.candidates_header(o), *[t for c in per_object[o] for t in (ids_of.candidate(c), match)]]
        block = torch.cat(block_rows) if block_rows else torch.zeros(0, dtype=torch.long)  # [B]
        lists = [per_object[o] for o in objects]
        candidates = pad_candidates(lists)  # [P, C]
        slots = torch.full(candidates.shape, -1, dtype=torch.long)  # [P, C] index among the prefix's match tokens
        for p, o in enumerate(objects):
            slots[p, : len(lists[p])] = torch.arange(len(lists[p])) + slot_start[o]
        block_embeds = self._embed(block[None], pair_tokens[:1])[0]  # [B, D] (no pair tokens in the block)
        answer = torch.tensor([ids_of.answer_id])
        rows = [torch.cat([g, self._pair_head(), ids_of.question(o), ids_of.answer(), answer])
                for g, o in zip(grounding, objects)]
        ids, lengths = pad_ids(rows, self.pad_id)
        embeds = self._embed(ids, pair_tokens)  # [P, L, D]
        match_in_block = (block == ids_of.match_id).nonzero(as_tuple=True)[0].to(self.backbone.device)  # [M]
        valid = candidates >= 0
        if mode == "unshared":  # the reference: every pair with its own copy of the whole prefix
            full = torch.cat([block_embeds[None].expand(len(objects), -1, -1), embeds], 1)  # [P, B + L, D]
            hidden = self._run_rows(lambda e: self.backbone.run_unshared(enc, e), full, lengths + block.numel())
            per_pair = hidden[:, match_in_block]  # [P, M, D]
            keys = gather_states(per_pair, slots)  # [P, C, D]
            hidden = hidden[:, block.numel():]
        else:
            extended = extend_encoding(self.backbone, enc, block, block_embeds)
            hidden, prefix = self._run(extended, embeds, lengths, mode, prefix_hidden=True)
            prefix_matches = prefix[enc.length + match_in_block]  # [M, D]
            keys = prefix_matches[slots.clamp(min=0).to(prefix.device)] * valid.to(prefix.device)[..., None]
        query = hidden[torch.arange(len(objects)), (lengths - 1).to(hidden.device)]  # [P, D] the answer token
        return candidates, self.match_head(query, keys, valid), self._sap_logits(sap_query, keys, candidates)
