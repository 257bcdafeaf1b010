"""The in-memory record that every data consumer (splits, prompts, retrieval, evaluation) works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SkinCapRecord:
    """One usable SkinCAP row after reading, validation and disease normalisation.

    `id` is the string form of the CSV `id`; `file_name` is `skincap_file_path` (``"<id>.png"``), the join key
    to images and to the original HIKARI split/prediction files. `disease` is the normalised name (one of the
    top-K after fuzzy merge) and `group` its Stage 1 group (None when the disease is outside the 10 groups).
    """

    id: str
    file_name: str
    image_path: Path
    disease: str
    group: str | None
    caption: str
    ori_file_path: str = ""
    source: str = ""
    raw_disease: str = ""
    flagged: bool = False
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
