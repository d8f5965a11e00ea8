"""The synthetic patient: a thorax/abdomen phantom in Hounsfield units.

A ``Phantom`` is built once per series (its random anatomy variations come
from the seed) and then yields one slice at a time, so a long series never
sits in memory. Anatomy is painted, vectorised with numpy and limited to each
structure's bounding box, at *anchor* levels every few millimetres along the
patient's axis; a slice between two anchors is their linear blend plus a
window of a pre-computed noise field. Only two anchors are cached at a time.

Coordinates follow DICOM's patient system (LPS) for a head-first supine
patient: image columns run to the patient's left, rows to the posterior, so
the liver appears on the image's left and the spine at the bottom.

``level`` is millimetres below the lung apex (0 = top of the chest, ~500 =
pelvis); the scan covers it in the feet-ward direction.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

# Hounsfield units of the tissues painted
AIR = -1000
LUNG = -850
FAT = -100
WATER = 0
CSF = 15
BOWEL = 20
KIDNEY = 32
BLOOD = 42
MUSCLE = 50
SPLEEN = 48
LIVER = 62
CANCELLOUS = 230
CORTICAL = 900
TABLE = 120

STORED_OFFSET = 1024  # stored value = HU + 1024 (Rescale Intercept -1024)
STORED_MAX = 4095  # 12 bits stored


def _profile(level: float, start: float, peak_from: float, peak_to: float, end: float) -> float:
    """0 outside [start, end], rising to 1 on [peak_from, peak_to] (a smooth trapezoid)."""
    if level <= start or level >= end:
        return 0.0
    if level < peak_from:
        t = (level - start) / (peak_from - start)
    elif level > peak_to:
        t = (end - level) / (end - peak_to)
    else:
        return 1.0
    return math.sin(t * math.pi / 2)


class _Body(NamedTuple):
    """The outline of one slice, which the structures inside it are placed by (``Phantom.anatomy``)."""

    ax: float  # half-axes of the body
    ay: float
    fat: float  # subcutaneous fat, mm
    cav_x: float  # half-axes of the cavity inside the muscle wall
    cav_y: float
    spine_y: float
    thorax: float  # how far this level is in the thorax, abdomen, pelvis (0..1)
    abdomen: float
    pelvis: float


class Phantom:
    """One patient's anatomy for one series, at a given matrix and field of view."""

    def __init__(self, rows: int = 512, cols: int = 512, fov_mm: float = 380.0, seed: int = 0,
                 anchor_mm: float = 2.0, noise_hu: float = 12.0) -> None:
        self.rows = rows
        self.cols = cols
        self.fov_mm = fov_mm
        self.seed = seed
        self.anchor_mm = anchor_mm
        rng = np.random.default_rng(seed)
        self.spacing_mm = fov_mm / max(rows, cols)  # square pixels
        # pixel centres in mm, image centre at 0
        self.x = ((np.arange(cols, dtype=np.float32) - (cols - 1) / 2) * self.spacing_mm)
        self.y = ((np.arange(rows, dtype=np.float32) - (rows - 1) / 2) * self.spacing_mm)
        # the patient: size, build and a few organ offsets vary with the seed
        self.scale = float(rng.uniform(0.88, 1.05))
        self.fat_mm = float(rng.uniform(10, 28))
        self.shift = rng.uniform(-6, 6, size=8).astype(float)
        self.vessels = rng.uniform(-1, 1, size=(14, 3)).astype(float)  # pulmonary vessels
        self.bowel = rng.uniform(-1, 1, size=(16, 4)).astype(float)  # loops: x, y, size, gas
        self.rib_phase = float(rng.uniform(0, 28))
        # a noise field larger than the image; each slice takes a different window
        pad = 32
        self._noise = (rng.standard_normal((rows + pad, cols + pad), dtype=np.float32) * noise_hu)
        self._noise_offsets = rng.integers(0, pad, size=(257, 2))
        self._anchors: OrderedDict[int, np.ndarray] = OrderedDict()

    # -- painting ---------------------------------------------------------
    def _box(self, cx: float, cy: float, ax: float, ay: float) -> tuple[slice, slice] | None:
        s = self.spacing_mm
        c0 = max(int((cx - ax - self.x[0]) / s) - 1, 0)
        c1 = min(int((cx + ax - self.x[0]) / s) + 2, self.cols)
        r0 = max(int((cy - ay - self.y[0]) / s) - 1, 0)
        r1 = min(int((cy + ay - self.y[0]) / s) + 2, self.rows)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def _ellipse(self, img: np.ndarray, cx: float, cy: float, ax: float, ay: float, hu: float) -> None:
        if ax <= 0 or ay <= 0:
            return
        box = self._box(cx, cy, ax, ay)
        if box is None:
            return
        rs, cs = box
        dx = ((self.x[cs] - cx) / ax) ** 2
        dy = ((self.y[rs] - cy) / ay) ** 2
        mask = (dy[:, None] + dx[None, :]) <= 1.0
        img[rs, cs][mask] = hu

    def _ring(self, img: np.ndarray, cx: float, cy: float, ax: float, ay: float, wall: float,
              hu_wall: float, hu_inside: float) -> None:
        self._ellipse(img, cx, cy, ax, ay, hu_wall)
        self._ellipse(img, cx, cy, ax - wall, ay - wall, hu_inside)

    def anatomy(self, level: float) -> np.ndarray:
        """The HU image (float32) at ``level`` mm below the lung apex."""
        img = np.full((self.rows, self.cols), AIR, dtype=np.float32)
        k = self.scale
        # body outline: wider at the shoulders, narrower at the waist
        ax = k * (165 + 12 * _profile(level, -60, -20, 40, 110) - 8 * _profile(level, 250, 320, 380, 450))
        ay = k * (112 - 6 * _profile(level, 200, 260, 360, 420) + 6 * _profile(level, 420, 480, 600, 700))
        # the table under the patient
        self._ellipse(img, 0, k * 118 + 9, 200, 4, TABLE)
        self._ellipse(img, 0, 0, ax, ay, FAT)
        fat = self.fat_mm * (0.7 + 0.5 * _profile(level, 200, 300, 600, 700))
        self._ellipse(img, 0, 0, ax - fat, ay - fat * 0.8, MUSCLE)
        cav_x, cav_y = ax - fat - 14, ay - fat * 0.8 - 14
        thorax = _profile(level, -40, 0, 235, 262)
        abdomen = _profile(level, 190, 240, 460, 520)
        pelvis = _profile(level, 400, 460, 700, 800)
        # the cavity: mediastinal / visceral fat
        self._ellipse(img, 0, -6, cav_x, cav_y, FAT + 20)
        spine_y = cav_y * 0.72
        b = _Body(ax, ay, fat, cav_x, cav_y, spine_y, thorax, abdomen, pelvis)
        # painted in this order: each structure over what is under it
        self._lungs(img, level, b)
        self._mediastinum(img, level, b)
        self._abdomen(img, level, b)
        self._pelvis(img, level, b)
        self._ribs(img, level, b)
        self._spine(img, level, b)
        return img

    def _lungs(self, img: np.ndarray, level: float, b: _Body) -> None:
        """Lungs: grow from the apex, the right one (image left) ends higher above the liver; their vessels."""
        sh = self.shift
        cav_x, cav_y = b.cav_x, b.cav_y
        for side, end in ((-1, 242 + sh[0]), (1, 258 + sh[1])):
            p = _profile(level, -30, 110, 170, end)
            if p > 0:
                lx, ly = side * cav_x * 0.48, -4 + 10 * (1 - p)
                self._ellipse(img, lx, ly, cav_x * 0.46 * p ** 0.5, cav_y * 0.80 * p ** 0.7, LUNG)
                for vx, vy, vr in self.vessels:
                    if (vx > 0) == (side > 0):
                        self._ellipse(img, lx + vx * cav_x * 0.3 * p, ly + vy * cav_y * 0.5 * p,
                                      1.5 + 2.5 * abs(vr), 1.5 + 2.5 * abs(vr), BLOOD)

    def _mediastinum(self, img: np.ndarray, level: float, b: _Body) -> None:
        """Trachea, then the heart and the great vessels."""
        sh = self.shift
        cav_y, spine_y, abdomen, pelvis = b.cav_y, b.spine_y, b.abdomen, b.pelvis
        trachea = _profile(level, -40, -30, 60, 75)
        if trachea:
            self._ring(img, 0, -cav_y * 0.25, 11, 10, 2.5, MUSCLE, AIR)
        heart = _profile(level, 70, 130, 190, 245)
        if heart:
            self._ellipse(img, 18 + sh[2], 5, 62 * heart, 52 * heart, MUSCLE - 5)
            self._ellipse(img, 22 + sh[2], 8, 44 * heart, 36 * heart, BLOOD)
        if _profile(level, 35, 50, 110, 130):
            self._ellipse(img, 8, -22, 15, 15, BLOOD)  # ascending aorta
        aorta_x, aorta_y = 14 + 8 * abdomen, spine_y - 30
        if level > 40 and pelvis < 0.8:
            self._ellipse(img, aorta_x, aorta_y, 12, 12, BLOOD)  # descending aorta
        if abdomen:
            self._ellipse(img, -24, aorta_y + 2, 13 * abdomen, 10 * abdomen, BLOOD - 4)  # IVC

    def _abdomen(self, img: np.ndarray, level: float, b: _Body) -> None:
        """Abdomen: liver, spleen, stomach, kidneys, bowel."""
        sh = self.shift
        cav_x, cav_y, spine_y = b.cav_x, b.cav_y, b.spine_y
        liver = _profile(level, 195 + sh[3], 245, 320, 390)
        if liver:
            self._ellipse(img, -cav_x * 0.38, -5 + sh[4], cav_x * 0.55 * liver, cav_y * 0.75 * liver, LIVER)
        spleen = _profile(level, 215, 245, 290, 330)
        if spleen:
            self._ellipse(img, cav_x * 0.62, cav_y * 0.35, 30 * spleen, 45 * spleen, SPLEEN)
        stomach = _profile(level, 215, 240, 290, 335)
        if stomach:
            sx, sy = cav_x * 0.35, -cav_y * 0.35
            self._ellipse(img, sx, sy, 44 * stomach, 34 * stomach, MUSCLE - 10)
            self._ellipse(img, sx, sy, 38 * stomach, 28 * stomach, BOWEL)
            self._ellipse(img, sx, sy - 16 * stomach, 30 * stomach, 12 * stomach, AIR)  # the air cap
        kidney = _profile(level, 290 + sh[5], 320, 370, 410)
        if kidney:
            for side in (-1, 1):
                kx, ky = side * (cav_x * 0.42), spine_y - 8
                self._ellipse(img, kx, ky, 26 * kidney, 34 * kidney, KIDNEY + 18)
                self._ellipse(img, kx, ky, 14 * kidney, 20 * kidney, KIDNEY)
                self._ellipse(img, kx - side * 8, ky, 5 * kidney, 8 * kidney, WATER + 5)
        bowel = _profile(level, 300, 360, 470, 530)
        if bowel:
            for i, (bx, by, bs, gas) in enumerate(self.bowel):
                turn = math.sin(level / 23.0 + i)
                r = (10 + 6 * abs(bs)) * bowel
                cx, cy = bx * cav_x * 0.6 + 6 * turn, -cav_y * 0.2 + by * cav_y * 0.45
                self._ellipse(img, cx, cy, r, r * 0.9, MUSCLE - 5)
                self._ellipse(img, cx, cy, r - 2.5, r * 0.9 - 2.5, AIR if gas > 0.55 else BOWEL)

    def _pelvis(self, img: np.ndarray, level: float, b: _Body) -> None:
        """Pelvis: bladder and iliac wings."""
        cav_x, cav_y, spine_y = b.cav_x, b.cav_y, b.spine_y
        bladder = _profile(level, 440, 480, 600, 650)
        if bladder:
            self._ellipse(img, 0, -cav_y * 0.3, 45 * bladder, 36 * bladder, WATER + 8)
        ilium = _profile(level, 390, 430, 500, 540)
        if ilium:
            for side in (-1, 1):
                ix, iy = side * cav_x * 0.62, spine_y - 12
                self._ellipse(img, ix, iy, 40 * ilium, 14 * ilium, CORTICAL - 200)
                self._ellipse(img, ix, iy, 34 * ilium, 8 * ilium, CANCELLOUS)

    def _ribs(self, img: np.ndarray, level: float, b: _Body) -> None:
        """Ribs and sternum: ribs come and go along z, sloping down towards the front."""
        ax, ay, fat, thorax = b.ax, b.ay, b.fat, b.thorax
        if thorax:
            if _profile(level, 20, 40, 170, 190):
                self._ellipse(img, 0, -(ay - fat * 0.8) + 10, 14, 7, CORTICAL - 300)  # sternum
            for i in range(11):
                theta = math.radians(-160 + i * 14)  # around the side, back to front
                for side in (-1, 1):
                    slope = 24 * (1 + math.sin(theta))  # anterior rib ends sit lower
                    phase = ((level - slope + self.rib_phase) / 27.0) % 1.0
                    if phase < 0.33 and level < 250 + 20 * math.sin(theta):
                        rx = side * (ax - fat - 6) * math.cos(theta)
                        ry = (ay - fat * 0.8 - 6) * -math.sin(theta)
                        self._ellipse(img, rx, ry, 6, 4.5, CORTICAL)
                        self._ellipse(img, rx, ry, 3.5, 2.5, CANCELLOUS)

    def _spine(self, img: np.ndarray, level: float, b: _Body) -> None:
        """Spine: vertebral bodies with discs between them, canal and lamina."""
        sh = self.shift
        spine_y = b.spine_y
        disc = ((level + sh[6] * 3) / 27.0) % 1.0 < 0.2
        self._ellipse(img, 0, spine_y, 19, 16, MUSCLE + 35 if disc else CORTICAL - 200)
        if not disc:
            self._ellipse(img, 0, spine_y, 16, 13, CANCELLOUS)
        self._ellipse(img, 0, spine_y + 27, 13, 12, CORTICAL - 300)
        self._ellipse(img, 0, spine_y + 26, 7.5, 7, CSF)
        self._ellipse(img, 0, spine_y + 44, 4, 10, CORTICAL - 300)

    def _anchor(self, k: int) -> np.ndarray:
        img = self._anchors.get(k)
        if img is None:
            img = self.anatomy(k * self.anchor_mm)
            img += STORED_OFFSET
            self._anchors[k] = img
            while len(self._anchors) > 2:
                self._anchors.popitem(last=False)
        return img

    def stored(self, level: float, index: int = 0) -> np.ndarray:
        """The stored pixel values (uint16, HU + 1024, 12 bits) of one slice."""
        pos = level / self.anchor_mm
        k = math.floor(pos)
        w = np.float32(pos - k)
        a = self._anchor(k)
        buf = a * (1 - w) if w else a.copy()
        if w:
            b = self._anchor(k + 1)
            buf += b * w
        oy, ox = self._noise_offsets[index % len(self._noise_offsets)]
        buf += self._noise[oy:oy + self.rows, ox:ox + self.cols]
        np.clip(buf, 0, STORED_MAX, out=buf)
        return buf.astype(np.uint16)

    def hu(self, level: float, index: int = 0) -> np.ndarray:
        """The slice in Hounsfield units (int16)."""
        return self.stored(level, index).astype(np.int16) - STORED_OFFSET

    def series(self, levels: list[float]) -> Iterator[np.ndarray]:
        """Stored pixel arrays for each level, one at a time."""
        for i, level in enumerate(levels):
            yield self.stored(level, i)
