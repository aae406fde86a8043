"""A synthetic EyePACS-style fundus dataset, written in the lab's layout.

Each image is drawn like a colour fundus photograph: an orange-red eye disc on a
black, non-square canvas (margins of varying width), an optic disc, a vessel tree
that arches around a darker macula, and camera-like variation (exposure, colour
cast, blur, sensor noise, size). The grade shows as lesion signatures that grow
with it, as in the international clinical DR scale:

* grade >= 1: microaneurysms (small dark-red dots)
* grade >= 2: blot haemorrhages and yellow hard exudates
* grade >= 3: many haemorrhages and venous beading
* grade 4: neovascularisation (fine tangled new vessels)

Lesion counts are Poisson draws whose means rise with grade, so neighbouring
grades overlap (a grade-1 eye can show no microaneurysm, a grade-0 eye one).
Lesions are drawn larger than real ones, so that they survive downscaling to the
default image size. Class shares follow EyePACS; both eyes of a patient usually
share a grade; the train/test split is by patient, stratified by the patient's
worse eye. Everything derives from ``seed``: the same params give byte-identical
CSVs and images.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retino.data.layout import IMAGE_FOLDER, Split, image_path, write_split
from retino.data.splits import stratified_patients
from retino.grading import NUM_CLASS
from retino.pool import ordered_map

# EyePACS training labels: 25,810 / 2,443 / 5,292 / 873 / 708 of 35,126
GRADE_SHARES = np.array([25810, 2443, 5292, 873, 708]) / 35126
# Chance that the second eye's grade is proposed to move one step; with the
# Metropolis acceptance below, about 12.4 % of patients end with unequal eyes
# (EyePACS: the two eyes share a grade 87.6 % of the time) and each eye's grade
# keeps the EyePACS class shares.
OTHER_EYE_STEP_PROB = 0.673
JPEG_QUALITY = 92

# Poisson means per grade 0..4
MICROANEURYSMS = (0.25, 4.0, 7.0, 9.0, 8.0)
HAEMORRHAGES = (0.0, 0.3, 3.0, 11.0, 9.0)
EXUDATES = (0.0, 0.3, 4.0, 6.0, 6.0)
BEADING_PROB = (0.0, 0.0, 0.03, 0.8, 0.6)
NEOVASCULAR_PROB = (0.0, 0.0, 0.0, 0.05, 0.95)


@dataclass(frozen=True)
class EyeSpec:
    """One image to draw: its name, grade, which eye, and its random stream index."""

    name: str
    grade: int
    eye: str  # "left" or "right"
    index: int


# --- labels and split ---------------------------------------------------------------

def _other_eye_grade(rng: np.random.Generator, grade: int) -> int:
    """A Metropolis step from ``grade``: the pair's marginals stay GRADE_SHARES."""
    proposal = grade + int(rng.choice((-1, 1)))
    if rng.random() >= OTHER_EYE_STEP_PROB or not 0 <= proposal < NUM_CLASS:
        return grade
    accept = min(1.0, GRADE_SHARES[proposal] / GRADE_SHARES[grade])
    return proposal if rng.random() < accept else grade


def make_patients(patients: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Patient ids and their (left, right) grades, shape (patients, 2)."""
    rng = np.random.default_rng([seed, 0])
    ids = np.sort(rng.choice(np.arange(10, 10 + 60 * patients), size=patients, replace=False))
    # quotas rather than independent draws keep small sets close to the EyePACS shares
    # (at least one patient per grade once there are enough patients, so that tiny
    # sets still hold every grade)
    quota = np.floor(GRADE_SHARES * patients).astype(int)
    if patients >= 2 * NUM_CLASS:
        quota = np.maximum(quota, 1)
    quota[0] += patients - quota.sum()
    first = rng.permutation(np.repeat(np.arange(NUM_CLASS), quota))
    grades = np.empty((patients, 2), dtype=np.int64)
    for i, grade in enumerate(first):
        other = _other_eye_grade(rng, int(grade))
        grades[i] = (grade, other) if rng.random() < 0.5 else (other, grade)
    return [str(i) for i in ids], grades


def _split_of(ids: list[str], grades: np.ndarray, patients: np.ndarray,
              rng: np.random.Generator) -> tuple[Split, list[tuple[str, int, str]]]:
    eyes = [(f"{ids[p]}_{eye}", int(grades[p, side]), eye)
            for p in patients for side, eye in enumerate(("left", "right"))]
    eyes = [eyes[i] for i in rng.permutation(len(eyes))]
    split = Split(names=[e[0] for e in eyes], labels=np.array([e[1] for e in eyes]))
    return split, eyes


def plan_dataset(patients: int, test_fraction: float, seed: int
                 ) -> tuple[dict[str, Split], list[EyeSpec]]:
    """The splits and the list of images to draw, without drawing anything."""
    ids, grades = make_patients(patients, seed)
    is_test = stratified_patients(grades.max(axis=1), test_fraction,
                                  np.random.default_rng([seed, 1]))
    rng = np.random.default_rng([seed, 2])
    splits, specs = {}, []
    for mode, members in (("train", np.flatnonzero(~is_test)), ("test", np.flatnonzero(is_test))):
        splits[mode], eyes = _split_of(ids, grades, members, rng)
        specs += [EyeSpec(name, grade, eye, 0) for name, grade, eye in eyes]
    specs = sorted(specs, key=lambda s: s.name)
    specs = [EyeSpec(s.name, s.grade, s.eye, i) for i, s in enumerate(specs)]
    return splits, specs


# --- drawing ------------------------------------------------------------------------

class _Eye:
    """Geometry of one drawn eye: canvas size, centre, radius, landmark positions."""

    def __init__(self, rng: np.random.Generator, canvas_height: int, eye: str):
        self.height = int(round(canvas_height * rng.uniform(0.88, 1.12)))
        self.width = int(round(self.height * rng.uniform(1.2, 1.55)))
        self.radius = self.height * rng.uniform(0.40, 0.52)  # > 0.5: top/bottom cut off
        self.cx = self.width / 2 + rng.uniform(-0.1, 0.1) * self.width
        self.cy = self.height / 2 + rng.uniform(-0.03, 0.03) * self.height
        # the optic disc sits nasally: right of centre for a right eye (as photographed)
        self.side = 1.0 if eye == "right" else -1.0
        self.disc = (self.side * rng.uniform(0.36, 0.46), rng.uniform(-0.06, 0.06))
        self.macula = (self.disc[0] - self.side * rng.uniform(0.6, 0.7), self.disc[1] + 0.03)

    def to_pixels(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + u * self.radius, self.cy + v * self.radius


def _background(rng: np.random.Generator, eye: _Eye) -> tuple[np.ndarray, np.ndarray]:
    """The lit retina (H, W, 3 in 0..1) and the eye's soft-edged mask (H, W)."""
    ys, xs = np.mgrid[0:eye.height, 0:eye.width].astype(np.float32)
    u, v = (xs - eye.cx) / eye.radius, (ys - eye.cy) / eye.radius
    r2 = u * u + v * v
    base = np.array([0.86, 0.36, 0.14]) * rng.uniform(0.85, 1.15, size=3)
    shade = 1.0 - 0.45 * r2
    for _ in range(3):  # low-frequency choroidal texture
        kx, ky, phase = rng.uniform(2, 7), rng.uniform(2, 7), rng.uniform(0, 2 * np.pi)
        shade += 0.035 * np.sin(kx * u + ky * v + phase)
    du, dv = u - eye.disc[0], v - eye.disc[1]
    disc = np.clip(1.6 - np.sqrt(du * du + dv * dv) / 0.085, 0, 1)
    mu, mv = u - eye.macula[0], v - eye.macula[1]
    macula = np.exp(-(mu * mu + mv * mv) / 0.012)
    rgb = base[None, None, :] * shade[..., None] * (1 - 0.3 * macula[..., None])
    rgb = rgb * (1 - disc[..., None]) + np.array([1.0, 0.86, 0.58]) * disc[..., None]
    mask = np.clip((1.0 - np.sqrt(r2)) * eye.radius / 1.5, 0, 1)
    return rgb.astype(np.float32), mask.astype(np.float32)


def _wander(rng: np.random.Generator, start: tuple[float, float], heading: float,
            turn: float, steps: int, step: float) -> list[tuple[float, float]]:
    """A gently curving polyline in eye coordinates."""
    points = [start]
    for _ in range(steps):
        heading += turn + rng.normal(0, 0.06)
        u, v = points[-1]
        points.append((u + step * math.cos(heading), v + step * math.sin(heading)))
    return points


def _vessel_paths(rng: np.random.Generator, eye: _Eye) -> list[tuple[list, float]]:
    """(polyline, width in eye radii) of the main arcades and their branches."""
    toward_macula = math.pi if eye.side > 0 else 0.0
    paths = []
    for sign in (-1, 1):  # superior and inferior arcades arch around the macula
        heading = toward_macula - sign * eye.side * 1.35
        turn = sign * eye.side * 0.1
        vein = _wander(rng, eye.disc, heading, turn, 16, 0.08)
        paths.append((vein, 0.03))
        paths.append((_wander(rng, eye.disc, heading - sign * eye.side * 0.25, turn, 15, 0.08),
                      0.018))  # the artery runs beside the vein, thinner
        for k in rng.choice(np.arange(3, 12), size=4, replace=False):
            paths.append((_wander(rng, vein[k], heading + turn * k + sign * rng.uniform(0.4, 1.0),
                                  rng.normal(0, 0.05), 6, 0.06), 0.013))
        nasal = _wander(rng, eye.disc, -toward_macula + sign * 0.8 + math.pi,
                        rng.normal(0, 0.08), 8, 0.07)
        paths.append((nasal, 0.015))
    return paths


def _draw_polyline(draw: ImageDraw.ImageDraw, eye: _Eye, points: list, width: float,
                   value: int) -> None:
    pixels = [eye.to_pixels(u, v) for u, v in points]
    draw.line(pixels, fill=value, width=max(1, int(round(width * eye.radius))), joint="curve")


def _random_spot(rng: np.random.Generator, near: tuple[float, float] | None = None,
                 spread: float = 0.0) -> tuple[float, float]:
    """A point inside the eye (radius < 0.9), optionally clustered around ``near``."""
    while True:
        if near is None:
            u, v = rng.uniform(-0.9, 0.9, size=2)
        else:
            u, v = near[0] + rng.normal(0, spread), near[1] + rng.normal(0, spread)
        if u * u + v * v < 0.81:
            return float(u), float(v)


def _draw_dot(draw: ImageDraw.ImageDraw, eye: _Eye, centre: tuple[float, float],
              radius_u: float, radius_v: float, value: int) -> None:
    x, y = eye.to_pixels(*centre)
    rx, ry = max(0.7, radius_u * eye.radius), max(0.7, radius_v * eye.radius)
    draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=value)


def _draw_lesions(rng: np.random.Generator, eye: _Eye, grade: int, paths: list,
                  red: ImageDraw.ImageDraw, yellow: ImageDraw.ImageDraw) -> None:
    for _ in range(rng.poisson(MICROANEURYSMS[grade])):
        r = rng.uniform(0.018, 0.028)
        _draw_dot(red, eye, _random_spot(rng, eye.macula, 0.35), r, r, 235)
    for _ in range(rng.poisson(HAEMORRHAGES[grade])):
        r = rng.uniform(0.03, 0.07)
        _draw_dot(red, eye, _random_spot(rng), r, r * rng.uniform(0.5, 1.0), 220)
    for _ in range(rng.poisson(EXUDATES[grade])):
        centre = _random_spot(rng, eye.macula, 0.2)
        for _ in range(rng.integers(1, 4)):
            r = rng.uniform(0.012, 0.026)
            _draw_dot(yellow, eye, _random_spot(rng, centre, 0.03), r, r, 230)
    if rng.random() < BEADING_PROB[grade]:
        for points, width in paths[:2]:  # beads along the main veins
            for u, v in points[3::2]:
                r = width * rng.uniform(1.2, 1.7)
                _draw_dot(red, eye, (u, v), r, r, 200)
    if rng.random() < NEOVASCULAR_PROB[grade]:
        origin = _random_spot(rng, eye.disc, 0.15)
        for _ in range(rng.integers(5, 9)):
            loop = _wander(rng, origin, rng.uniform(0, 2 * math.pi), rng.uniform(-0.9, 0.9),
                           7, 0.025)
            _draw_polyline(red, eye, loop, 0.008, 210)


def _layers(rng: np.random.Generator, eye: _Eye, grade: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vessel, red-lesion and yellow-lesion masks (H, W) in 0..1."""
    size = (eye.width, eye.height)
    vessels, red, yellow = (Image.new("L", size) for _ in range(3))
    paths = _vessel_paths(rng, eye)
    vessel_draw = ImageDraw.Draw(vessels)
    for points, width in paths:
        _draw_polyline(vessel_draw, eye, points, width, 200)
    _draw_lesions(rng, eye, grade, paths, ImageDraw.Draw(red), ImageDraw.Draw(yellow))
    soften = ImageFilter.GaussianBlur(max(0.5, eye.radius / 160))
    return tuple(np.asarray(m.filter(soften), dtype=np.float32) / 255.0
                 for m in (vessels, red, yellow))


def _camera(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray, height: int) -> Image.Image:
    """Exposure, gamma, noise, blur and the black surround of a fundus camera."""
    rgb = np.clip(rgb * rng.lognormal(0, 0.15), 0, 1) ** rng.uniform(0.85, 1.2)
    rgb = rgb + rng.normal(0, rng.uniform(0.005, 0.025), size=rgb.shape)
    rgb = rgb * mask[..., None] + rng.uniform(0, 0.02, size=rgb.shape) * (1 - mask[..., None])
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3) * height / 256))
    return image


def render_eye(grade: int, eye: str, seed: int, index: int, canvas_height: int) -> Image.Image:
    """Draw one fundus photograph of the given grade; same arguments, same pixels."""
    rng = np.random.default_rng([seed, 3, index])
    geometry = _Eye(rng, canvas_height, eye)
    rgb, mask = _background(rng, geometry)
    vessels, red, yellow = _layers(rng, geometry, grade)
    rgb = rgb * (1 - 0.5 * vessels[..., None]) * np.array([1.0, 0.75, 0.8]) ** vessels[..., None]
    dark_red = np.array([0.42, 0.05, 0.04]) * rgb.mean(axis=2, keepdims=True) / 0.45
    rgb = rgb * (1 - red[..., None]) + dark_red * red[..., None]
    rgb = rgb * (1 - yellow[..., None]) + np.array([0.98, 0.9, 0.5]) * yellow[..., None]
    return _camera(rng, rgb, mask, canvas_height)


def _write_eye(args: tuple[EyeSpec, int, int, str]) -> str:
    spec, seed, canvas_height, folder = args
    buffer = io.BytesIO()
    render_eye(spec.grade, spec.eye, seed, spec.index, canvas_height).save(
        buffer, format="JPEG", quality=JPEG_QUALITY)
    image_path(folder, spec.name).write_bytes(buffer.getvalue())
    return spec.name


def write_dataset(folder: Path, patients: int, canvas_height: int, test_fraction: float,
                  seed: int, workers: int, on_image: Callable[[], None] = lambda: None
                  ) -> dict[str, Split]:
    """Draw the whole dataset into ``folder`` (lab layout); return its splits."""
    splits, specs = plan_dataset(patients, test_fraction, seed)
    image_folder = folder / IMAGE_FOLDER
    image_folder.mkdir(parents=True)
    jobs = [(spec, seed, canvas_height, str(image_folder)) for spec in specs]
    for _ in ordered_map(_write_eye, jobs, workers):
        on_image()
    for mode, split in splits.items():
        write_split(folder, mode, split)
    return splits
