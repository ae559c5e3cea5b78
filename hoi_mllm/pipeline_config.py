"""The persisted configuration of a saved pipeline (``config.json`` of ``save_pretrained``).

One dataclass, :class:`PipelineConfig`, written by :meth:`HOIPipeline.save_pretrained` and read by
:meth:`HOIPipeline.from_pretrained`. ``version`` is the folder format's version: a folder written by
a newer hoi_mllm (a higher version) is refused with a clear error instead of being misread; older
versions are read as they were written.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from hoi_mllm.pairs import PairProposalConfig
from hoi_mllm.postprocess import PostprocessConfig

FORMAT = "hoi-mllm/recogniser"
VERSION = 1  # the newest folder version this code reads and the one it writes
MODES = ("matching", "training-free")


class PipelineConfigError(ValueError):
    """A saved pipeline's config.json cannot be read; the message names the file and the problem."""


@dataclass
class PipelineConfig:
    """What a saved pipeline folder holds besides weights.

    Attributes:
        mode: ``matching`` (fine-tuned recogniser) or ``training-free`` (likelihood scorer).
        base_model: ``{"name_or_path", "origin", "family", "num_pair_tokens"}``; ``name_or_path`` is
            ``"base"`` when the whole backbone is saved in the folder.
        vocabulary: a built-in vocabulary name, or ``{"embedded": vocabulary dict}``.
        recogniser: the :class:`~hoi_mllm.models.recogniser.RecogniserConfig` dict (matching mode).
        likelihood: the :class:`~hoi_mllm.models.likelihood.LikelihoodConfig` dict (training-free).
        adapter: ``{"module", "folder"}`` of a saved peft adapter, or None.
        pair_config, post_config: pair proposal and post-processing.
        version: the folder format version.
    """

    mode: str
    base_model: dict
    vocabulary: object
    recogniser: dict | None = None
    likelihood: dict | None = None
    adapter: dict | None = None
    pair_config: PairProposalConfig = field(default_factory=PairProposalConfig)
    post_config: PostprocessConfig = field(default_factory=PostprocessConfig)
    version: int = VERSION

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": self.version, "mode": self.mode, "base_model": dict(self.base_model),
                "adapter": self.adapter, "vocabulary": self.vocabulary, "recogniser": self.recogniser,
                "likelihood": self.likelihood, "pair_config": asdict(self.pair_config),
                "post_config": asdict(self.post_config)}

    @classmethod
    def from_dict(cls, data: dict, origin: str = "config.json") -> "PipelineConfig":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise PipelineConfigError(f"{origin}: 'format' is {got!r}, expected {FORMAT!r} "
                                      "(a folder written by HOIPipeline.save_pretrained)")
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise PipelineConfigError(f"{origin}: version {version!r} is not a format version (1..{VERSION})")
        if version > VERSION:
            raise PipelineConfigError(f"{origin}: written by a newer hoi_mllm (folder format version {version}; "
                                      f"this one reads versions up to {VERSION}): upgrade hoi_mllm to load it")
        if data.get("mode") not in MODES:
            raise PipelineConfigError(f"{origin}: mode {data.get('mode')!r} not allowed; allowed: {', '.join(MODES)}")
        for key in ("base_model", "vocabulary"):
            if key not in data:
                raise PipelineConfigError(f"{origin}: missing {key!r}")
        try:
            pair = PairProposalConfig(**data.get("pair_config", {}))
            post = PostprocessConfig(**data.get("post_config", {}))
        except TypeError as exc:
            raise PipelineConfigError(f"{origin}: bad pair_config / post_config ({exc})") from exc
        return cls(mode=data["mode"], base_model=dict(data["base_model"]), vocabulary=data["vocabulary"],
                   recogniser=data.get("recogniser"), likelihood=data.get("likelihood"), adapter=data.get("adapter"),
                   pair_config=pair, post_config=post, version=version)

    @classmethod
    def read(cls, folder: str | Path) -> "PipelineConfig":
        from hoi_mllm.io import read_json

        path = Path(folder) / "config.json"
        return cls.from_dict(read_json(path, "recogniser config"), str(path))
