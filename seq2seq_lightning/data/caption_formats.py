"""Readers of captioned-image annotation files: COCO captions, Karpathy splits and Flickr8k tokens.

- COCO (``captions_train2017.json``): ``images[].id/file_name`` and ``annotations[].image_id/caption``.
  One file is one split (COCO ships a file per split).
- Karpathy (``dataset_coco.json``, ``dataset_flickr8k.json``, ``dataset_flickr30k.json``):
  ``images[].filename`` (and ``filepath``), ``split`` (train, restval, val, test; restval counts as train)
  and ``sentences[].raw``.
- Flickr8k (``Flickr8k.token.txt``, also Flickr30k's ``results_20130124.token``): ``image.jpg#0<TAB>caption``
  lines. The splits come from ``Flickr_8k.trainImages.txt`` / ``devImages`` / ``testImages`` next to the
  file when they are there.

Every reader returns ``{split: [CaptionedImage, ...]}``: "train", "val", "test" for files that name their
splits, otherwise "all". Captions are normalised by :func:`normalize_caption`. Image paths are resolved
against ``image_root`` or, without it, the first of the usual places next to the annotation file that
holds the images (``images/``, ``train2017/``, ``Flicker8k_Dataset/``...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seq2seq_lightning.data.text import read_lines

FORMATS = ("coco", "karpathy", "flickr8k")
_WORD = re.compile(r"[^\W_]+|'")
_FLICKR_LINE = re.compile(r"^([^\t#]+)#\d+\t(.*)$")
_FLICKR_SPLITS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                  "test": "Flickr_8k.testImages.txt"}
_IMAGE_DIRS = ("", "images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images")


@dataclass
class CaptionedImage:
    """One image and its reference captions (normalised)."""

    image: str  # a path, or an id for generated images
    captions: list[str] = field(default_factory=list)


def normalize_caption(text: str, lowercase: bool = True) -> str:
    """Words joined by single spaces: punctuation other than apostrophes dropped, apostrophes split off.

    ``"A man's hat."`` -> ``"a man ' s hat"``. This is also what a word-level tokenizer decodes to, so
    references and outputs compare word for word.
    """
    return " ".join(_WORD.findall(text.lower() if lowercase else text))


def detect_format(path: str | os.PathLike) -> str:
    """``coco``, ``karpathy`` or ``flickr8k`` from the file's content."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        for line in read_lines(path)[:5]:
            if _FLICKR_LINE.match(line):
                return "flickr8k"
        raise ValueError(f"{path}: not a COCO/Karpathy JSON file and no 'image.jpg#0<TAB>caption' lines")
    data = _load_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if isinstance(images, list) and "annotations" in data:
        return "coco"
    if isinstance(images, list) and images and isinstance(images[0], dict) and "sentences" in images[0]:
        return "karpathy"
    raise ValueError(f"{path}: a JSON file with neither COCO keys (images, annotations) "
                     "nor Karpathy keys (images[].sentences)")


def read_captions(path: str | os.PathLike, format: str = "auto", image_root: str | os.PathLike | None = None,
                  lowercase: bool = True) -> dict[str, list[CaptionedImage]]:
    """``{split: images}`` of an annotation file (format ``auto`` detects it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"unknown caption format {format!r}; known formats: auto, {', '.join(FORMATS)}")
    reader = {"coco": _read_coco, "karpathy": _read_karpathy, "flickr8k": _read_flickr}[fmt]
    splits, subdirs = reader(path)
    for items in splits.values():
        for item in items:
            item.captions = [c for c in (normalize_caption(c, lowercase) for c in item.captions) if c]
    all_items = [item for items in splits.values() for item in items]
    root = resolve_root([item.image for item in all_items], path, image_root, subdirs)
    for item in all_items:
        item.image = str(root / item.image)
    return {split: [i for i in items if i.captions] for split, items in splits.items()}


def resolve_root(names: Sequence[str], annotations: Path, image_root: str | os.PathLike | None,
                 subdirs: Sequence[str] = ()) -> Path:
    """The first candidate folder that holds the first images, else the first candidate."""
    bases = [Path(image_root)] if image_root is not None else [annotations.parent, annotations.parent.parent]
    candidates = [base / sub for base in bases for sub in (*_IMAGE_DIRS, *subdirs)]
    probe = list(names[:3])
    for folder in candidates:
        if probe and all((folder / name).is_file() for name in probe):
            return folder
    for folder in candidates:  # a partly missing image set: take the folder holding any of them
        if any((folder / name).is_file() for name in probe):
            return folder
    return candidates[0]


def _load_json(path: Path) -> object:
    with open(path, "rb") as handle:
        return json.loads(handle.read().decode("utf-8-sig"))


def _read_coco(path: Path) -> tuple[dict[str, list[CaptionedImage]], list[str]]:
    data = _load_json(path)
    by_id: dict[int, CaptionedImage] = {}
    for image in data["images"]:
        by_id[image["id"]] = CaptionedImage(image["file_name"])
    for annotation in data["annotations"]:
        item = by_id.get(annotation["image_id"])
        if item is not None:
            item.captions.append(str(annotation["caption"]))
    # captions_val2017.json -> images in val2017/
    split_dir = path.stem.split("_", 1)[1] if path.stem.startswith("captions_") else ""
    return {"all": list(by_id.values())}, [split_dir] if split_dir else []


def _read_karpathy(path: Path) -> tuple[dict[str, list[CaptionedImage]], list[str]]:
    data = _load_json(path)
    splits: dict[str, list[CaptionedImage]] = {"train": [], "val": [], "test": []}
    for image in data["images"]:
        split = {"restval": "train"}.get(image.get("split", "train"), image.get("split", "train"))
        name = os.path.join(image.get("filepath", ""), image["filename"])
        captions = [str(s.get("raw") or " ".join(s.get("tokens", []))) for s in image.get("sentences", [])]
        splits.setdefault(split, []).append(CaptionedImage(name, captions))
    return splits, []


def _read_flickr(path: Path) -> tuple[dict[str, list[CaptionedImage]], list[str]]:
    by_name: dict[str, CaptionedImage] = {}
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        match = _FLICKR_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected 'image.jpg#N<TAB>caption', got {line[:80]!r}")
        name, caption = match.group(1).strip(), match.group(2)
        by_name.setdefault(name, CaptionedImage(name)).captions.append(caption)
    lists = {split: path.parent / name for split, name in _FLICKR_SPLITS.items()}
    if not all(p.is_file() for p in lists.values()):
        return {"all": list(by_name.values())}, []
    splits: dict[str, list[CaptionedImage]] = {}
    for split, list_path in lists.items():
        names = [line.strip() for line in read_lines(list_path) if line.strip()]
        splits[split] = [by_name[n] for n in names if n in by_name]
    return splits, []
