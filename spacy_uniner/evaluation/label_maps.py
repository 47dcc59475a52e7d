"""Raw dataset tags → natural-language entity types, kept in one place.

The student is asked "What describes {type} in the text?", so a BIO tag such as
``programlang`` or ``RATINGS_AVERAGE`` must become words first. The built-in
maps live in ``spacy_uniner/data/label_maps.json`` (one object per dataset);
a value of ``null`` drops the tag (its tokens are read as ``O``), which is how
CrossNER's ``misc`` is left out, as in UniversalNER's own evaluation files.

Choices worth knowing:

* CrossNER ``organisation`` → ``organization`` and the compound tags are split
  into words (``musicalartist`` → ``musical artist``), which are the types
  UniversalNER's CrossNER files ask about. One exception: ``programlang`` →
  ``programming language`` (UniversalNER's CrossNER_AI.json says ``program
  language``; the zero-shot suite reads that JSON file, so its questions are
  UniversalNER's).
* MIT Restaurant keeps UniversalNER's capitalised types (``Restaurant Name``)
  so the BIO file and ``mit-restaurant.json`` ask the same questions.
* MIT Movie (UniversalNER never published its JSON) uses lower-case words,
  e.g. ``RATINGS_AVERAGE`` → ``average ratings``.
* Plain questions (no ``Dataset:`` field: the dev suite's CoNLL-2003 and
  BC5CDR sets, and the ``--plain-share`` of their training passages) ask the
  same natural names but leave catch-all tags out (:func:`plain_label_map`):
  CoNLL-2003 ``misc`` means "whatever the guidelines did not put elsewhere",
  which no user asks for, so it is asked only under ``Dataset: CoNLL-2003``
  (as ``miscellaneous entity``) and its tokens count as ``O`` otherwise.

* CoNLL-2003: ``conll2003`` maps both the CrossNER-style tags of the shared
  files (``person``, ``organisation``, ``location``, ``misc``) and the standard
  CoNLL tags (``PER``, ``ORG``, ``LOC``, ``MISC``).

A user map is a JSON object ``{"raw tag": "type" | null}``, given as a path
(``--label-map my_map.json``) or a built-in name (``--label-map mit_movie``).
Tags missing from the map fall back to :func:`readable_tag` with a warning.
Without a map, raw tags are asked as they are, except a tag set that is all
dataset codes in capitals (``PER``, ``LOC``): that is refused, suggesting a map
(:func:`spacy_uniner.evaluation.benchmarks.load_bio`); mapping each tag to
itself keeps them.
"""

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

logger = logging.getLogger("spacy_uniner")

LabelMap = Dict[str, Optional[str]]
_BUILTIN = Path(__file__).parents[1] / "data" / "label_maps.json"


@lru_cache(maxsize=1)
def _builtin_maps() -> Dict[str, LabelMap]:
    data = json.loads(_BUILTIN.read_text(encoding="utf8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def builtin_label_maps() -> Dict[str, LabelMap]:
    """Every built-in map by dataset name (a copy)."""
    return {name: dict(m) for name, m in _builtin_maps().items()}


def readable_tag(tag: str) -> str:
    """A fallback type for an unmapped tag: ``RATINGS_AVERAGE`` → ``ratings average``."""
    words = tag.replace("_", " ").replace("-", " ").split()
    text = " ".join(words)
    return text.lower() if text.isupper() else text


def _validate(mapping: Mapping, origin: str) -> LabelMap:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"Label map {origin} must be a JSON object, got {type(mapping).__name__}")
    out: LabelMap = {}
    for tag, label in mapping.items():
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ValueError(
                f"Label map {origin}: tag {tag!r} maps to {label!r}; use a non-empty string "
                f"or null (to drop the tag)"
            )
        out[str(tag)] = " ".join(label.split()) if label is not None else None
    return out


def read_json_file(path: Path) -> Any:
    """The JSON in ``path``; a file that is not UTF-8 or not JSON is a ValueError that
    names it and the position (line and column, or byte)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            f"a truncated or damaged file?"
        ) from None


def suggest_label_maps(tags: Iterable[str]) -> List[str]:
    """The built-in maps that name every one of ``tags``."""
    wanted = set(tags)
    return [name for name, mapping in _builtin_maps().items() if wanted <= set(mapping)]


def load_label_map(spec: Union[None, str, Path, Mapping]) -> Optional[LabelMap]:
    """Resolve a label map from a built-in name, a JSON file path or a mapping.

    spec: None (no map), a built-in name such as ``"crossner_ai"``, a path to
        a JSON object, or a mapping.
    RETURNS (Optional[LabelMap]): the map, or None if ``spec`` is None.
    """
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return _validate(spec, "given as a mapping")
    maps = _builtin_maps()
    if isinstance(spec, str) and spec in maps:
        return dict(maps[spec])
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"Label map {str(spec)!r} is neither a built-in map ({', '.join(sorted(maps))}) "
            f"nor an existing JSON file"
        )
    return _validate(read_json_file(path), str(path))


#: Raw tags of catch-all classes (the ELSE family of the teacher's filter, paper §3.1):
#: their meaning is the dataset's guidelines, so plain questions do not ask them.
CATCH_ALL_TAGS = frozenset({"misc", "miscellaneous", "other", "others", "else"})


def plain_label_map(spec: Union[str, Path, Mapping]) -> LabelMap:
    """The natural type names for plain questions: ``spec``'s map with catch-all
    tags (:data:`CATCH_ALL_TAGS`) dropped.

    spec: as for :func:`load_label_map` (not None).
    RETURNS (LabelMap): a new map; tags it drops map to None.
    """
    mapping = load_label_map(spec)
    if mapping is None:
        raise ValueError("plain_label_map needs a label map, got None")
    return {tag: (None if tag.lower() in CATCH_ALL_TAGS else label)
            for tag, label in mapping.items()}


def tag_names(label_map: Mapping[str, Optional[str]]) -> Dict[str, List[str]]:
    """Natural type → the raw tags that map to it (e.g. ``organization`` →
    ``["organisation"]``), the other names a passage's types go by."""
    out: Dict[str, List[str]] = {}
    for tag, label in label_map.items():
        if label is not None:
            out.setdefault(label, []).append(tag)
    return out


def map_tag(tag: str, label_map: Optional[LabelMap], warned: Optional[set] = None) -> Optional[str]:
    """The entity type for a raw tag (None: the tag is dropped).

    Without a map the tag is used as it is. With a map, a tag it does not list
    becomes :func:`readable_tag` and is warned about once per ``warned`` set.
    """
    if label_map is None:
        return tag
    if tag in label_map:
        return label_map[tag]
    if warned is not None and tag not in warned:
        warned.add(tag)
        logger.warning("Tag %r is not in the label map; using %r", tag, readable_tag(tag))
    return readable_tag(tag)
