"""Captions of synthetic scenes: five distinct sentences written from a SceneDescription.

Every caption names all land covers and the small objects with their count; most also give the
objects' colour, their location, their relation to a structure or water, and the structure, so
a caption matches its image only when content at several scales agrees. Templates and synonyms
vary the wording; the vocabulary stays small (about 110 words).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from msa_model.data.synth_scene import SceneDescription

__all__ = [
    "COUNT_WORDS",
    "COVER_PHRASES",
    "LOCATION_PHRASES",
    "MAX_TOKENS",
    "OBJECT_NOUNS",
    "describe",
]

COVER_PHRASES: dict[str, tuple[str, ...]] = {
    "water": ("water", "a lake", "open water"),
    "forest": ("a forest", "dense forest", "woodland"),
    "farmland": ("farmland", "farm fields", "cultivated fields"),
    "bare land": ("bare land", "barren land", "bare ground"),
    "residential": ("a residential area", "dense houses", "a neighborhood"),
}
OBJECT_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "car": (("car", "cars"), ("vehicle", "vehicles")),
    "ship": (("ship", "ships"), ("boat", "boats")),
    "plane": (("plane", "planes"), ("airplane", "airplanes")),
    "storage tank": (("storage tank", "storage tanks"), ("oil tank", "oil tanks")),
    "tree": (("tree", "trees"),),
}
COUNT_WORDS: dict[int, tuple[str, ...]] = {
    1: ("a", "an", "one", "a single"),
    2: ("two",),
    3: ("three",),
    4: ("four",),
}
LOCATION_PHRASES: dict[str, tuple[str, ...]] = {
    "upper left": ("in the upper left", "in the upper left corner", "at the top left"),
    "upper right": ("in the upper right", "in the upper right corner", "at the top right"),
    "lower left": ("in the lower left", "in the lower left corner", "at the bottom left"),
    "lower right": ("in the lower right", "in the lower right corner", "at the bottom right"),
    "center": ("in the center", "in the middle"),
}
_SIDE_ADVERB = {
    "left": "on the left",
    "right": "on the right",
    "upper": "at the top",
    "lower": "at the bottom",
}
_STRUCTURE_NP = {
    "road": ("a road", "a straight road", "a paved road"),
    "river": ("a river", "a winding river", "a narrow river"),
    "bridge": ("a bridge over a river", "a river crossed by a bridge"),
}
_STRUCTURE_CLAUSE = {
    "road": ("{sp} runs through {cp}", "{sp} crosses {cp}"),
    "river": ("{sp} flows through {cp}", "{sp} winds through {cp}"),
    "bridge": ("a road crosses a river on a bridge in {cp}", "a bridge spans a river in {cp}"),
    "buildings": ("{sp} {stand} in {cp}",),
}
_NUMBER = {1: "one", 2: "two", 3: "three", 4: "four"}
_TOKEN = re.compile(r"[a-z]+|[,;.]")
MAX_TOKENS = 28


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(count: int, words: str, rng: np.random.Generator) -> str:
    if count > 1:
        return f"{_NUMBER[count]} {words}"
    article = _pick(rng, ("a", "one", "a single"))
    if article == "a" and words[0] in "aeiou":
        article = "an"
    return f"{article} {words}"


def _cover_phrase(scene: SceneDescription, rng: np.random.Generator) -> str:
    parts = [(_pick(rng, COVER_PHRASES[r.cover]), r.side) for r in scene.covers]
    if len(parts) == 1:
        return parts[0][0]
    if rng.random() < 0.5:
        parts.reverse()
    form = rng.random()
    if form < 0.4:
        return " and ".join(phrase for phrase, _ in parts)
    if form < 0.7:
        return " and ".join(f"{phrase} in the {side} half" for phrase, side in parts)
    return " and ".join(f"{phrase} {_SIDE_ADVERB[side]}" for phrase, side in parts)


def _structure_np(scene: SceneDescription, rng: np.random.Generator) -> str:
    if scene.structure == "buildings":
        size = _pick(rng, ("large", "big"))
        noun = "building" if scene.structure_count == 1 else "buildings"
        return _with_article(scene.structure_count, f"{size} {scene.structure_color} {noun}", rng)
    return _pick(rng, _STRUCTURE_NP[scene.structure])


def _relation_phrase(scene: SceneDescription, rng: np.random.Generator) -> str:
    target = scene.relation_target
    if target == "buildings" and scene.structure_count == 1:
        target = "building"
    if scene.relation == "on":
        return f"on the {target}"
    return f"{_pick(rng, ('next to', 'beside', 'near'))} the {target}"


def _phrases(scene: SceneDescription, rng: np.random.Generator) -> dict[str, str]:
    """One random wording of every part of the scene; optional parts may come out empty."""
    singular, plural = OBJECT_NOUNS[scene.objects][
        int(rng.integers(len(OBJECT_NOUNS[scene.objects])))
    ]
    noun = singular if scene.count == 1 else plural
    color = f"{scene.color} " if rng.random() < 0.85 else ""
    relation = (
        _relation_phrase(scene, rng) if scene.relation is not None and rng.random() < 0.8 else ""
    )
    location = (
        _pick(rng, LOCATION_PHRASES[scene.location]) if not relation or rng.random() < 0.85 else ""
    )
    cp = _cover_phrase(scene, rng)
    sp = _structure_np(scene, rng) if scene.structure and rng.random() < 0.85 else ""
    clause = ""
    if scene.structure:
        stand = "stands" if scene.structure_count == 1 else "stand"
        clause = _pick(rng, _STRUCTURE_CLAUSE[scene.structure]).format(
            sp=sp or _structure_np(scene, rng), cp=cp, stand=stand
        )
    return {
        "op": _with_article(scene.count, f"{color}{noun}", rng),
        "be": "is" if scene.count == 1 else "are",
        "where": f"{relation} {location}",
        "lp": location or relation,
        "cp": cp,
        "with_sp": f" with {sp}" if sp else "",
        "and_sp": f" and {sp}" if sp else "",
        "clause": clause,
    }


_TEMPLATES: tuple[Callable[[dict[str, str]], str], ...] = (
    lambda p: "{op} {be} {where} in {cp}{with_sp}".format(**p),
    lambda p: "an aerial image of {cp}{with_sp}, and {op} {where}".format(**p),
    lambda p: "there {be} {op} {where}, surrounded by {cp}{and_sp}".format(**p),
    lambda p: (
        "{clause}, and {op} {be} {where}" if p["clause"] else "{cp} with {op} {where}"
    ).format(**p),
    lambda p: "{op} can be seen {where} in this image of {cp}{with_sp}".format(**p),
    lambda p: "this picture shows {cp}{and_sp}; {op} {be} {where}".format(**p),
    lambda p: "{cp}{with_sp} and {op} {where}".format(**p),
    lambda p: "{lp}, {op} {be} visible; the scene shows {cp}{and_sp}".format(**p),
)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r" ([,;])", r"\1", text)
    return text + "."


def _length(caption: str) -> int:
    return len(_TOKEN.findall(caption))


def describe(scene: SceneDescription, rng: np.random.Generator) -> list[str]:
    """Five distinct lowercase captions of ``scene``, each from a different template.

    Wordings longer than :data:`MAX_TOKENS` words and punctuation marks are redrawn (a few
    times), so that captions fit a 32-token text encoder with its two special tokens.
    """
    captions: list[str] = []
    for index in rng.permutation(len(_TEMPLATES)):
        template = _TEMPLATES[int(index)]
        caption = _tidy(template(_phrases(scene, rng)))
        for _ in range(10):
            if _length(caption) <= MAX_TOKENS:
                break
            caption = min(caption, _tidy(template(_phrases(scene, rng))), key=_length)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == 5:
            return captions
    raise RuntimeError("could not write five distinct captions")  # pragma: no cover
