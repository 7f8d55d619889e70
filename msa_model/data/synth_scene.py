"""Drawing of synthetic top-down remote-sensing scenes and their structured description.

A scene has content at three scales, all drawn to be visible at 64 px:

* land cover (large): one cover over the whole image, or two covers split into halves;
  water, forest, farmland, bare land, residential area, each with its own colour and texture;
* a structure (medium): a road, a river, a bridge carrying a road over a river, or one to three
  large buildings with a coloured roof (or none);
* small objects: one to four cars, ships, planes, storage tanks or trees, of one colour, grouped
  in a quadrant or the centre, sometimes on or next to the structure or the water.

Geometry is defined at 64 px and scaled with the image size. Randomness comes only from the
``numpy.random.Generator`` passed in, so a seed gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "COVERS",
    "LOCATIONS",
    "OBJECT_COLORS",
    "OBJECTS",
    "STRUCTURES",
    "CoverRegion",
    "SceneDescription",
    "generate_scene",
]

COVERS = ("water", "forest", "farmland", "bare land", "residential")
STRUCTURES = ("road", "river", "bridge", "buildings")
OBJECTS = ("car", "ship", "plane", "storage tank", "tree")
LOCATIONS = ("upper left", "upper right", "lower left", "lower right", "center")
SIDES = ("left", "right", "upper", "lower")
_OPPOSITE = {"left": "right", "right": "left", "upper": "lower", "lower": "upper"}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "white": (245, 245, 240),
    "yellow": (245, 215, 30),
    "blue": (35, 75, 235),
    "green": (20, 80, 25),
}
OBJECT_COLORS: dict[str, tuple[str, ...]] = {
    "car": ("red", "white", "yellow", "blue"),
    "ship": ("white", "red", "yellow"),
    "plane": ("white", "red"),
    "storage tank": ("white",),
    "tree": ("green",),
}
BUILDING_COLORS = ("white", "red", "blue")
_ROOF = {"white": (235, 235, 228), "red": (185, 55, 45), "blue": (60, 95, 200)}
_SHADOW = (28, 28, 28)

# Small-object shapes at 64 px as (u0, u1, v0, v1) inclusive rectangles; u runs along the object.
_SHAPES: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "car": ((-2, 1, -1, 0),),
    "ship": ((-4, 2, -1, 1), (3, 4, 0, 0)),
    "plane": ((-4, 4, -1, 0), (-1, 0, -4, 3), (3, 4, -2, 1)),
}
_DISC = {"storage tank": 6, "tree": 5}  # disc diameters at 64 px


@dataclass(frozen=True)
class CoverRegion:
    """A land cover and where it lies: ``"all"`` or the ``left/right/upper/lower`` half."""

    cover: str
    side: str


@dataclass(frozen=True)
class SceneDescription:
    """What a scene shows; the captions are written from it.

    Attributes:
        covers: One region (side ``"all"``) or two complementary halves.
        structure: ``"road"``, ``"river"``, ``"bridge"``, ``"buildings"`` or None.
        structure_count: Number of buildings (1 for other structures, 0 for none).
        structure_color: Roof colour of the buildings, else None.
        objects: The small-object class (one of :data:`OBJECTS`).
        count: How many small objects (1-4).
        color: Their colour (a key of :data:`COLORS`).
        location: Where the group lies (one of :data:`LOCATIONS`).
        relation: ``"on"``, ``"next to"`` or None.
        relation_target: ``"water"``, ``"river"``, ``"road"``, ``"buildings"`` or None.
        positions: Object centres as (x, y) pixels.
    """

    covers: tuple[CoverRegion, ...]
    structure: str | None
    structure_count: int
    structure_color: str | None
    objects: str
    count: int
    color: str
    location: str
    relation: str | None
    relation_target: str | None
    positions: tuple[tuple[int, int], ...]


# ----------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly interpolated value noise in [-1, 1], ``cells`` cells across."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    t = np.arange(size) * (cells / size)
    i = t.astype(np.int64)
    f = t - i
    fy, fx = f[:, None], f[None, :]
    a, b = grid[np.ix_(i, i)], grid[np.ix_(i, i + 1)]
    c, d = grid[np.ix_(i + 1, i)], grid[np.ix_(i + 1, i + 1)]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def _texture(cover: str, rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    """A (size, size, 3) float texture of a land cover."""
    noise = rng.normal(0.0, 1.0, (size, size, 1))
    if cover == "water":
        base = np.array([35.0, 80.0, 150.0])
        return base + 10 * _smooth_noise(rng, size, 4)[..., None] * [0.3, 0.6, 1.0] + 3 * noise
    if cover == "forest":
        base = np.array([36.0, 98.0, 42.0])
        blotch = _smooth_noise(rng, size, 10)[..., None]
        return base + 16 * blotch * [0.6, 1.0, 0.6] + 13 * noise * [0.6, 1.0, 0.6]
    if cover == "bare land":
        base = np.array([202.0, 172.0, 124.0])
        return base + 14 * _smooth_noise(rng, size, 5)[..., None] + 7 * noise
    if cover == "farmland":
        palette = np.array([[200.0, 188.0, 95.0], [125.0, 165.0, 62.0], [165.0, 128.0, 82.0]])
        width = max(2, round(int(rng.integers(5, 10)) * s))
        coord = np.arange(size)
        strip = (coord + int(rng.integers(width))) // width
        colors = palette[rng.integers(0, 3, strip.max() + 1)][strip]  # (size, 3)
        edge = np.where((coord + int(rng.integers(width))) % width == 0, 0.82, 1.0)[:, None]
        rows = colors * edge
        img = np.broadcast_to(rows[:, None, :], (size, size, 3))
        if rng.random() < 0.5:
            img = img.transpose(1, 0, 2)
        return img + 6 * noise
    if cover == "residential":
        ground = np.array([158.0, 158.0, 152.0])
        roofs = np.array(
            [
                [170.0, 82.0, 62.0],
                [205.0, 125.0, 72.0],
                [118.0, 118.0, 128.0],
                [222.0, 212.0, 198.0],
            ]
        )
        cell, house = max(3, round(7 * s)), max(2, round(5 * s))
        n = size // cell + 2
        colour = roofs[rng.integers(0, len(roofs), (n, n))]
        present = rng.random((n, n)) > 0.12
        off = int(rng.integers(cell))
        idx = (np.arange(size) + off) // cell
        inside = ((np.arange(size) + off) % cell) < house
        roof = inside[:, None] & inside[None, :] & present[np.ix_(idx, idx)]
        img = np.where(roof[..., None], colour[np.ix_(idx, idx)], ground)
        return img + 5 * noise
    raise ValueError(f"unknown cover {cover!r}")


# ----------------------------------------------------------------------------- masks


def _box_sums(mask: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """For each pixel (cy, cx): how many True pixels lie in rows cy+y0..cy+y1, cols cx+x0..cx+x1.

    Boxes are clipped to the image; the result has the mask's shape.
    """
    h, w = mask.shape
    pad = max(abs(y0), abs(y1), abs(x0), abs(x1)) + 1
    padded = np.pad(mask.astype(np.int32), pad)
    integral = np.zeros((h + 2 * pad + 1, w + 2 * pad + 1), dtype=np.int32)
    integral[1:, 1:] = padded.cumsum(0).cumsum(1)
    ys, xs = pad + np.arange(h), pad + np.arange(w)
    a = integral[np.ix_(ys + y1 + 1, xs + x1 + 1)]
    b = integral[np.ix_(ys + y0, xs + x1 + 1)]
    c = integral[np.ix_(ys + y1 + 1, xs + x0)]
    d = integral[np.ix_(ys + y0, xs + x0)]
    return a - b - c + d


def _fits(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Centres at which the box (y0, y1, x0, x1) lies inside the image and inside ``mask``."""
    y0, y1, x0, x1 = box
    area = (y1 - y0 + 1) * (x1 - x0 + 1)
    return _box_sums(mask, y0, y1, x0, x1) == area


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return _box_sums(mask, -radius, radius, -radius, radius) > 0


def _region(location: str, size: int) -> np.ndarray:
    """Mask of object centres that count as lying at ``location``."""
    coord = np.arange(size)
    low, high = coord < 0.42 * size, coord >= 0.58 * size
    mid = (coord >= 0.3 * size) & (coord < 0.7 * size)
    rows = {"upper": low, "lower": high}
    cols = {"left": low, "right": high}
    if location == "center":
        return mid[:, None] & mid[None, :]
    vertical, horizontal = location.split()
    return rows[vertical][:, None] & cols[horizontal][None, :]


# ----------------------------------------------------------------------------- layout


def _cover_layout(
    rng: np.random.Generator, size: int
) -> tuple[tuple[CoverRegion, ...], np.ndarray]:
    """Cover regions and a (size, size) map of cover indices into :data:`COVERS`."""
    first = COVERS[int(rng.integers(len(COVERS)))]
    cover_map = np.full((size, size), COVERS.index(first), dtype=np.int8)
    if rng.random() < 0.45:
        return (CoverRegion(first, "all"),), cover_map
    second = COVERS[int(rng.choice([i for i, c in enumerate(COVERS) if c != first]))]
    side = SIDES[int(rng.integers(4))]
    coord = np.arange(size)
    wave = rng.uniform(0.42, 0.58) * size + rng.uniform(1.0, 3.0) * size / 64 * np.sin(
        coord * rng.uniform(0.08, 0.2) * 64 / size + rng.uniform(0, 2 * np.pi)
    )
    if side in ("left", "right"):
        inside = coord[None, :] < wave[:, None]  # column < boundary(row)
    else:
        inside = coord[:, None] < wave[None, :]  # row < boundary(column)
    if side in ("right", "lower"):
        inside = ~inside
    cover_map[inside] = COVERS.index(second)
    regions = (CoverRegion(first, _OPPOSITE[side]), CoverRegion(second, side))
    return regions, cover_map


def _line_mask(size: int, points: list[tuple[float, float]], width: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line(
        [(round(x), round(y)) for x, y in points], fill=255, width=width, joint="curve"
    )
    return np.asarray(canvas) > 0


def _river(rng: np.random.Generator, size: int, s: float, horizontal: bool) -> np.ndarray:
    offset = rng.uniform(0.3, 0.7) * size
    amplitude, period = rng.uniform(3, 7) * s, rng.uniform(40, 80) * s
    phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(-8 * s, size + 8 * s, 3 * s)
    d = offset + amplitude * np.sin(2 * np.pi * t / period + phase)
    points = list(zip(t, d, strict=True)) if horizontal else list(zip(d, t, strict=True))
    return _line_mask(size, points, max(2, round(7 * s)))


def _road(rng: np.random.Generator, size: int, s: float, horizontal: bool) -> np.ndarray:
    offset = rng.uniform(0.25, 0.75) * size
    ends = [(-2.0, offset), (size + 2.0, offset)]
    points = ends if horizontal else [(y, x) for x, y in ends]
    return _line_mask(size, points, max(2, round(5 * s)))


def _place(
    rng: np.random.Generator, candidates: np.ndarray, count: int, spacing: tuple[int, int]
) -> list[tuple[int, int]] | None:
    """Pick ``count`` (x, y) centres from (N, 2) (y, x) candidates, boxes ``spacing`` apart."""
    if len(candidates) < count:
        return None
    chosen: list[tuple[int, int]] = []
    for _ in range(40 * count):
        y, x = (int(v) for v in candidates[int(rng.integers(len(candidates)))])
        if all(abs(x - px) >= spacing[0] or abs(y - py) >= spacing[1] for px, py in chosen):
            chosen.append((x, y))
            if len(chosen) == count:
                return chosen
    return None


def _road_axis(mask: np.ndarray) -> int:
    """0 when a road/river mask runs left-right (wider than tall), else 1."""
    ys, xs = np.nonzero(mask)
    return 0 if np.ptp(xs) >= np.ptp(ys) else 1


# ----------------------------------------------------------------------------- objects


def _rects(kind: str, s: float, orientation: int) -> list[tuple[int, int, int, int]]:
    """Scaled, rotated rectangles (x0, x1, y0, y1) of a small object, relative to its centre."""
    if kind in _DISC:
        d = max(2, round(_DISC[kind] * s))
        return [(-(d // 2), d - d // 2 - 1, -(d // 2), d - d // 2 - 1)]

    def scaled(a: int, b: int) -> tuple[int, int]:  # keeps >= 1 px and the centre pixel
        start = math.floor(a * s + 0.5)
        return start, max(start, math.floor((b + 1) * s + 0.5) - 1)

    out = []
    for u0, u1, v0, v1 in _SHAPES[kind]:
        u, v = scaled(u0, u1), scaled(v0, v1)
        if orientation == 0:
            x, y = u, v
        elif orientation == 1:
            x, y = (-v[1], -v[0]), u
        elif orientation == 2:
            x, y = (-u[1], -u[0]), (-v[1], -v[0])
        else:
            x, y = v, (-u[1], -u[0])
        out.append((x[0], x[1], y[0], y[1]))
    return out


def _footprint(rects: list[tuple[int, int, int, int]], s: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) box of the rectangles and their shadow."""
    shadow = max(1, round(s))
    return (
        min(r[2] for r in rects),
        max(r[3] for r in rects) + shadow,
        min(r[0] for r in rects),
        max(r[1] for r in rects) + shadow,
    )


def _draw_object(
    draw: ImageDraw.ImageDraw,
    kind: str,
    rects: list[tuple[int, int, int, int]],
    centre: tuple[int, int],
    color: str,
    s: float,
) -> None:
    cx, cy = centre
    shadow = max(1, round(s))
    fill = COLORS[color]
    for x0, x1, y0, y1 in rects:
        box = (cx + x0 + shadow, cy + y0 + shadow, cx + x1 + shadow, cy + y1 + shadow)
        (draw.ellipse if kind in _DISC else draw.rectangle)(box, fill=_SHADOW)
    for x0, x1, y0, y1 in rects:
        box = (cx + x0, cy + y0, cx + x1, cy + y1)
        if kind == "storage tank":
            draw.ellipse(box, fill=fill, outline=(105, 105, 105))
        elif kind == "tree":
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)


# ----------------------------------------------------------------------------- scene


def _structure_choice(rng: np.random.Generator, covers: tuple[str, ...]) -> str | None:
    if "water" in covers:
        if len(covers) == 1 or rng.random() < 0.5:
            return None
        return "buildings"
    options = (None, *STRUCTURES)
    return options[int(rng.integers(len(options)))]


def _draw_structure(
    rng: np.random.Generator, image: np.ndarray, structure: str | None, land: np.ndarray, s: float
) -> tuple[dict[str, np.ndarray], int, str | None]:
    """Paint the structure into ``image`` (float, in place); return its masks, count, colour."""
    size = image.shape[0]
    masks: dict[str, np.ndarray] = {}
    if structure in ("river", "bridge"):
        horizontal = bool(rng.random() < 0.5)
        masks["river"] = _river(rng, size, s, horizontal)
        tint = 6 * _smooth_noise(rng, size, 4)[..., None]
        image[masks["river"]] = (np.array([40.0, 88.0, 162.0]) + tint)[masks["river"]]
        if structure == "bridge":
            road = _road(rng, size, s, not horizontal)
            deck = road & _dilate(masks["river"], max(1, round(2 * s)))
            image[road & ~deck] = (92, 92, 92)
            image[deck] = (190, 184, 172)
            rail = deck & ~_fits(deck, (-1, 1, -1, 1))
            image[rail] = (70, 70, 70)
            masks["road"] = road
            masks["river"] = masks["river"] & ~deck
        return masks, 1, None
    if structure == "road":
        masks["road"] = _road(rng, size, s, bool(rng.random() < 0.5))
        image[masks["road"]] = (92, 92, 92)
        return masks, 1, None
    if structure == "buildings":
        count = int(rng.integers(1, 4))
        color = BUILDING_COLORS[int(rng.integers(len(BUILDING_COLORS)))]
        w, h = (round(int(v) * s) for v in rng.integers(9, 15, 2))
        margin, shadow = max(1, round(2 * s)), max(1, round(2 * s))
        box = (
            -h // 2 - margin,
            h - h // 2 + shadow + margin,
            -w // 2 - margin,
            w - w // 2 + shadow + margin,
        )
        candidates = np.argwhere(_fits(land, box))
        centres = _place(rng, candidates, count, (w + shadow + 2 * margin, h + shadow + 2 * margin))
        if centres is None:
            return masks, 0, None
        mask = np.zeros(land.shape, dtype=bool)
        for cx, cy in centres:
            x0, y0 = cx - w // 2, cy - h // 2
            image[y0 + shadow : y0 + h + shadow, x0 + shadow : x0 + w + shadow] = _SHADOW
            image[y0 : y0 + h, x0 : x0 + w] = _ROOF[color]
            image[y0 + h // 2, x0 : x0 + w] = np.array(_ROOF[color]) * 0.85  # roof ridge
            mask[y0 : y0 + h + shadow, x0 : x0 + w + shadow] = True
        masks["buildings"] = mask
        return masks, count, color
    return masks, 0, None


def _object_plan(
    rng: np.random.Generator,
    kind: str,
    masks: dict[str, np.ndarray],
    water: np.ndarray,
    land: np.ndarray,
    forest: np.ndarray,
    has_water_cover: bool,
    reach: int,
) -> list[tuple[str | None, str | None, np.ndarray]]:
    """Placement options for ``kind`` in preference order: (relation, target, allowed mask).

    "next to" allows object boxes that lie within ``reach`` pixels of the target.
    """
    plans: list[tuple[str | None, str | None, np.ndarray]] = []
    if kind == "ship":
        target = "river" if "river" in masks else "water"
        return [("on", target, water)]
    free = land & ~forest if kind == "tree" else land
    if kind == "car" and "road" in masks and rng.random() < 0.7:
        plans.append(("on", "road", masks["road"]))
    if rng.random() < 0.5:
        targets = [t for t in ("road", "river", "buildings") if t in masks]
        if has_water_cover:
            targets.append("water")
        if targets:
            target = targets[int(rng.integers(len(targets)))]
            source = masks[target] if target != "water" else water
            near = _dilate(source, reach)
            plans.append(("next to", target, free & near))
    plans.append((None, None, free))
    return plans


def generate_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, SceneDescription]:
    """Draw one synthetic remote-sensing scene.

    Args:
        rng: Source of all randomness (the same state gives the same image).
        size: Side length in pixels (geometry is designed at 64 and scaled; at least 32).

    Returns:
        The RGB image and the description its captions are written from.
    """
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    s = size / 64
    regions, cover_map = _cover_layout(rng, size)
    covers = tuple(r.cover for r in regions)
    image = np.zeros((size, size, 3))
    for cover in dict.fromkeys(covers):
        k = COVERS.index(cover)
        image[cover_map == k] = _texture(cover, rng, size, s)[cover_map == k]
    water_cover = cover_map == COVERS.index("water")
    structure = _structure_choice(rng, covers)
    masks, structure_count, structure_color = _draw_structure(
        rng, image, structure, ~water_cover, s
    )
    if structure_count == 0:
        structure = None
    occupied = np.zeros_like(water_cover)
    for mask in masks.values():
        occupied |= _dilate(mask, 1)
    water = water_cover | masks.get("river", np.zeros_like(water_cover))
    if "road" in masks:
        water &= ~_dilate(masks["road"], max(1, round(2 * s)))
    land = ~water_cover & ~occupied
    forest = cover_map == COVERS.index("forest")

    room = {"ship": water.any(), "tree": (land & ~forest).any()}
    kinds = [k for k in OBJECTS if room.get(k, land.any())]
    for attempt in range(6 * len(kinds)):
        kind = kinds[int(rng.integers(len(kinds)))]
        count = max(1, int(rng.integers(1, 5)) - attempt // len(kinds))
        orientation = int(rng.integers(4))
        if kind == "car" and "road" in masks and orientation % 2 != _road_axis(masks["road"]):
            orientation = (orientation + 1) % 4
        if kind == "ship" and "river" in masks:
            orientation = 2 * int(rng.integers(2)) + _road_axis(masks["river"])
        rects = _rects(kind, s, orientation)
        box = _footprint(rects, s)
        gap = max(2, round(2 * s))
        spacing = (box[3] - box[2] + 1 + gap, box[1] - box[0] + 1 + gap)
        reach = max(box[1] - box[0], box[3] - box[2]) + 1 + gap
        plans = _object_plan(rng, kind, masks, water, land, forest, bool(water_cover.any()), reach)
        for relation, target, allowed in plans:
            fits = _fits(allowed, box)
            for li in rng.permutation(len(LOCATIONS)):
                location = LOCATIONS[int(li)]
                candidates = np.argwhere(fits & _region(location, size))
                centres = _place(rng, candidates, count, spacing)
                if centres is None:
                    continue
                color = OBJECT_COLORS[kind][int(rng.integers(len(OBJECT_COLORS[kind])))]
                picture = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))
                draw = ImageDraw.Draw(picture)
                for centre in centres:
                    _draw_object(draw, kind, rects, centre, color, s)
                scene = SceneDescription(
                    covers=regions,
                    structure=structure,
                    structure_count=structure_count,
                    structure_color=structure_color,
                    objects=kind,
                    count=count,
                    color=color,
                    location=location,
                    relation=relation,
                    relation_target=target,
                    positions=tuple(centres),
                )
                return picture, scene
    raise RuntimeError("could not place any small object")  # pragma: no cover
