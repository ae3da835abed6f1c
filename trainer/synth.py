"""Synthetic bone-fracture radiographs: the project's embedded default dataset.

A fresh machine has neither internet nor the real Kaggle dataset, so the project ships
this generator. It draws a long bone (bright cortex, darker medulla, flared ends with
joint surfaces, a second bone across the joint) inside a soft-tissue envelope on a dark
background, and marks it with the sign a radiologist would name for each of the ten
classes of the real dataset (see :data:`CLASS_NAMES`).

Everything else is a nuisance drawn the same way for every class: pose, scale, exposure,
contrast, noise, blur, image size and aspect, file format (JPEG or PNG) and colour mode
(grayscale or a gray image stored as RGB). No class can be told apart by a global
statistic such as mean brightness or image size; a small CNN still learns the classes.

Only numpy and Pillow are used, so importing this module is cheap. The images are built
in a bone-aligned coordinate frame with vectorised numpy (an X-ray is a projection, so a
bone is drawn as the path length of a ray through a hollow cylinder), which takes a few
milliseconds per 256 px image.

Public API: :data:`CLASS_NAMES`, :func:`render`, :func:`render_with_sign`,
:func:`write_dataset`,
:func:`contact_sheet`.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "CLASS_NAMES",
    "INTACT",
    "contact_sheet",
    "render",
    "render_with_sign",
    "write_dataset",
    "write_detection_dataset",
]

#: The ten class folder names, spelled exactly as the real Kaggle dataset spells them.
CLASS_NAMES: tuple[str, ...] = (
    "Avulsion fracture",
    "Comminuted fracture",
    "Fracture Dislocation",
    "Greenstick fracture",
    "Hairline Fracture",
    "Impacted fracture",
    "Longitudinal fracture",
    "Oblique fracture",
    "Pathological fracture",
    "Spiral Fracture",
)

#: The split folders inside each class folder, as in the real dataset.
SPLITS: tuple[str, str] = ("Train", "Test")
#: An intact bone: the same anatomy, pose and exposure as the classes, and no sign.
INTACT = "Normal"
#: The folders of a detection set, spelled as FracAtlas spells them.
DETECTION_FOLDERS: tuple[str, str] = ("Fractured", "Non_fractured")
DETECTION_COCO = "fracture_masks.coco.json"

_MIN_SIZE = 32
_MIN_PER_CLASS = 2
_PNG_COMPRESS_LEVEL = 6
#: Fracture line width range at the nominal 256 px (scaled with ``size``).
_LINE_WIDTH = (2.5, 3.5)

FloatArray = np.ndarray


# --------------------------------------------------------------------------- geometry


@dataclass
class _Frame:
    """Pixel grid expressed in the main bone's frame: ``u`` along the shaft, ``v`` across.

    All lengths are in pixels. The joint end of the main bone is at ``u = +length / 2``.
    """

    u: FloatArray
    v: FloatArray
    length: float
    radius: float
    site_lo: float  # where a fracture may sit: in view, away from the joint end
    site_hi: float
    xs: FloatArray  # image position, -0.5..0.5 across and down
    ys: FloatArray


def _site(f: _Frame, rng: np.random.Generator) -> float:
    return float(rng.uniform(f.site_lo, f.site_hi))


def _pm(rng: np.random.Generator) -> float:
    """-1.0 or +1.0 with equal odds (a Python float, so float32 arrays stay float32)."""
    return float(rng.choice([-1.0, 1.0]))


def _width(rng: np.random.Generator, px: float) -> float:
    """Half-width (gaussian sigma) of a fracture line, in pixels."""
    return px * rng.uniform(*_LINE_WIDTH)


def _depth(rng: np.random.Generator) -> float:
    """How much of the bone's density a fracture line removes."""
    return rng.uniform(0.85, 1.0)


def _smoothstep(x: FloatArray) -> FloatArray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bone_profile(u: FloatArray, length: float, radius: float, flare: float) -> FloatArray:
    """Outer radius along the shaft: flared metaphyses, rounded joint surfaces, 0 outside."""
    half = length / 2.0
    au = np.abs(u)
    end_zone = 1.6 * radius
    e = (au - (half - end_zone - 1.2 * radius)) / end_zone
    r = radius * (1.0 + flare * _smoothstep(e))
    cap = 0.9 * radius * (1.0 + flare)
    c = np.clip((au - (half - cap)) / cap, 0.0, 1.0)
    return r * np.sqrt(np.clip(1.0 - c * c, 0.0, 1.0)) * (au < half)


def _bone_attenuation(
    u: FloatArray,
    v: FloatArray,
    length: float,
    radius: float,
    *,
    flare: float,
    medulla_ratio: float,
) -> FloatArray:
    """Projected attenuation of a hollow long bone centred at ``u = 0`` along ``v = 0``.

    The path length through the cortex peaks at the edges (the bright cortical lines of a
    radiograph); the medulla is a thin-walled, dimmer core that turns into denser
    cancellous bone with a thin cortex towards the ends.
    """
    r_out = _bone_profile(u, length, radius, flare)
    half = length / 2.0
    end_w = _smoothstep((np.abs(u) - (half - 3.0 * radius)) / (1.5 * radius))
    ratio = medulla_ratio + (0.88 - medulla_ratio) * end_w
    r_in = r_out * ratio
    v2 = v * v
    t_out = 2.0 * np.sqrt(np.maximum(r_out * r_out - v2, 0.0))
    t_in = 2.0 * np.sqrt(np.maximum(r_in * r_in - v2, 0.0))
    mu_medulla = 0.1 + 0.4 * end_w
    return ((t_out - t_in) + mu_medulla * t_in) / radius


def _line(
    u: FloatArray,
    v: FloatArray,
    u0: float,
    v0: float,
    angle: float,
) -> tuple[FloatArray, FloatArray]:
    """Signed distance from, and position along, the line through (u0, v0) at ``angle``.

    ``angle`` is measured from the shaft axis (0 runs along the bone, pi/2 straight across).
    """
    ca, sa = math.cos(angle), math.sin(angle)
    du, dv = u - u0, v - v0
    return -du * sa + dv * ca, du * ca + dv * sa


def _gauss(d: FloatArray, width: float | FloatArray) -> FloatArray:
    return np.exp(-0.5 * (d / width) ** 2)


def _segment(t: FloatArray, start: float, stop: float, soft: float) -> FloatArray:
    """1 inside ``start <= t <= stop``, fading to 0 over ``soft`` pixels outside it."""
    return _smoothstep((t - start) / soft + 1.0) * _smoothstep((stop - t) / soft + 1.0)


# --------------------------------------------------------------------------- rendering


@dataclass
class _Scene:
    """What the class-specific signs change before the bones are projected."""

    ub: FloatArray  # main-bone coordinates after displacement / bending
    vb: FloatArray
    density: FloatArray  # multiplies the main bone's attenuation (lines, lesions, bands)
    extra: FloatArray  # attenuation added on top (chips)
    joint_shift: float = 0.0  # lateral displacement of the second bone, pixels
    joint_angle: float = 0.0  # angle of the second bone to the main bone, radians
    joint_gap: float = 0.0  # extra joint space, pixels


def _shift_side(scene: _Scene, side: FloatArray, du: float, dv: float) -> None:
    """Displace the fragment where ``side`` is true by (du, dv)."""
    scene.ub = np.where(side, scene.ub - du, scene.ub)
    scene.vb = np.where(side, scene.vb - dv, scene.vb)


def _darken(
    scene: _Scene, d: FloatArray, width: float | FloatArray, depth: float, mask: Any = 1.0
) -> None:
    scene.density *= 1.0 - depth * _gauss(d, width) * mask


def _break_line(
    scene: _Scene,
    f: _Frame,
    rng: np.random.Generator,
    *,
    u0: float,
    angle: float,
    width: float,
    depth: float,
    shift: float,
) -> None:
    """A complete fracture line across the shaft, the distal fragment displaced."""
    d, _ = _line(f.u, f.v, u0, 0.0, angle)
    side = d > 0 if math.sin(angle) < 0 else d < 0
    sgn = _pm(rng)
    _shift_side(scene, side, rng.uniform(-0.3, 0.6) * shift, sgn * shift)
    _darken(scene, d, width, depth)


def _sign_oblique(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    u0 = _site(f, rng)
    angle = _pm(rng) * math.radians(rng.uniform(30.0, 60.0))
    width, depth = _width(rng, px), _depth(rng)
    shift = f.radius * rng.uniform(0.25, 0.6)
    _break_line(s, f, rng, u0=u0, angle=angle, width=width, depth=depth, shift=shift)


def _sign_spiral(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    u0 = _site(f, rng)
    period = f.radius * rng.uniform(2.6, 3.6)
    span = period * rng.uniform(0.9, 1.3)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    k = 2.0 * np.pi / period
    amp = f.radius * 1.05
    arg = k * (f.u - u0) + phase
    curve = amp * np.sin(arg)
    slope = amp * k * np.cos(arg)
    d = (f.v - curve) / np.sqrt(1.0 + slope * slope)
    mask = _segment(f.u - u0, -span / 2.0, span / 2.0, 2.0 * px)
    _darken(s, d, _width(rng, px), _depth(rng), mask)
    # A slight twist of the distal fragment along the helix.
    side = (f.u - u0) > span / 2.0
    _shift_side(s, side, 0.0, _pm(rng) * f.radius * rng.uniform(0.1, 0.25))


def _sign_longitudinal(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    u0 = _site(f, rng)
    span = f.length * rng.uniform(0.25, 0.4)
    v0 = f.radius * rng.uniform(-0.45, 0.45)
    tilt = math.radians(rng.uniform(-3.0, 3.0))
    wobble = f.radius * 0.08 * np.sin(f.u / (f.radius * rng.uniform(0.8, 1.5)))
    d, t = _line(f.u, f.v - wobble, u0, v0, tilt)
    mask = _segment(t, -span / 2.0, span / 2.0, 3.0 * px)
    _darken(s, d, _width(rng, px), _depth(rng), mask)


def _sign_comminuted(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    u0 = _site(f, rng)
    n = int(rng.integers(3, 6))
    half_len = f.radius * rng.uniform(1.6, 2.2)
    piece = np.zeros(f.u.shape, dtype=np.int32)
    darkening = np.ones(f.u.shape, dtype=np.float32)
    # Spread the lines along the shaft so that they cut it into several pieces.
    centres = u0 + f.radius * np.linspace(-1.0, 1.0, n) * rng.uniform(0.6, 1.0)
    rng.shuffle(centres)
    for i in range(n):
        uc = float(centres[i]) + f.radius * rng.normal(0.0, 0.2)
        vc = f.radius * rng.normal(0.0, 0.25)
        angle = math.radians(rng.uniform(25.0, 155.0))
        d, t = _line(f.u, f.v, uc, vc, angle)
        mask = _segment(t, -half_len, half_len, 2.0 * px)
        darkening *= 1.0 - _depth(rng) * _gauss(d, _width(rng, px)) * mask
        piece += (d > 0).astype(np.int32) << i
    offsets = rng.normal(0.0, 0.2 * f.radius, size=(1 << n, 2)).astype(np.float32)
    window = _gauss(np.hypot(f.u - u0, f.v * 0.8), 1.8 * f.radius)
    s.ub = s.ub - offsets[piece, 0] * window
    s.vb = s.vb - offsets[piece, 1] * window
    s.density *= darkening


def _sign_avulsion(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    half = f.length / 2.0
    uc = half - f.radius * rng.uniform(0.8, 2.4)
    side = _pm(rng)
    r_edge = float(_bone_profile(np.array([uc]), f.length, f.radius, 0.6)[0])
    chip_r = f.radius * rng.uniform(0.35, 0.5)
    gap = f.radius * rng.uniform(0.3, 0.6) + 2.0 * px
    vc = side * (r_edge + gap + 0.5 * chip_r)
    ang = rng.uniform(0.0, np.pi)
    ca, sa = math.cos(ang), math.sin(ang)
    du, dv = f.u - uc, f.v - vc
    a = (du * ca + dv * sa) / (chip_r * rng.uniform(1.1, 1.6))
    b = (-du * sa + dv * ca) / chip_r
    rho2 = a * a + b * b
    s.extra += 2.6 * np.sqrt(np.maximum(1.0 - rho2, 0.0)) * (1.0 + 0.3 * (rho2 > 0.55))
    # The crater the chip was pulled from.
    notch = _gauss(np.hypot(f.u - uc, f.v - side * r_edge), chip_r)
    s.density *= 1.0 - 0.75 * notch


def _sign_greenstick(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    u0 = _site(f, rng)
    side = _pm(rng)
    bend = side * f.radius * rng.uniform(0.8, 1.2)
    reach = f.radius * rng.uniform(2.0, 3.0)
    # An angulated bow: a tent softened at its apex.
    tent = np.maximum(1.0 - np.abs(f.u - u0) / (3.0 * reach), 0.0)
    s.vb = s.vb - bend * (0.55 * tent + 0.45 * _gauss(f.u - u0, reach))
    # The crack opens on the convex (tension) side and stops part way across.
    angle = np.pi / 2 + math.radians(rng.uniform(-12.0, 12.0))
    d, t = _line(s.ub, s.vb, u0, side * f.radius, angle)
    depth_into = f.radius * rng.uniform(0.9, 1.3)
    # t grows towards +v for angle ~ pi/2; the crack runs from the convex cortex inwards.
    t_in = -side * t
    mask = _segment(t_in, -0.3 * f.radius, depth_into, 1.5 * px)
    taper = 1.0 - 0.5 * np.clip(t_in / depth_into, 0.0, 1.0)
    _darken(s, d, _width(rng, px) * taper, _depth(rng), mask)
    # The compressed opposite cortex buckles outwards a little.
    buckle = _gauss(f.u - u0, 0.8 * f.radius) * (s.vb * side < 0)
    s.vb = s.vb / (1.0 + 0.18 * buckle)


def _sign_hairline(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    u0 = _site(f, rng)
    angle = np.pi / 2 + math.radians(rng.uniform(-20.0, 20.0))
    d, t = _line(f.u, f.v, u0, 0.0, angle)
    reach = f.radius * rng.uniform(1.3, 2.2)
    off = rng.uniform(-0.3, 0.3) * f.radius
    mask = _segment(t, off - reach / 2.0, off + reach / 2.0, 2.0 * px)
    _darken(s, d, px * rng.uniform(1.0, 1.3), rng.uniform(0.5, 0.65), mask)


def _sign_impacted(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    u0 = _site(f, rng)
    angle = np.pi / 2 + math.radians(rng.uniform(-15.0, 15.0))
    d, _ = _line(f.u, f.v, u0, 0.0, angle)
    band = px * rng.uniform(3.0, 4.5)
    irregular = 1.0 + 0.35 * np.sin(f.v / (0.25 * f.radius) + rng.uniform(0, 6.3))
    s.density *= 1.0 + rng.uniform(1.1, 1.5) * _gauss(d, band * irregular)
    # Telescoped ends: the shaft widens a little around the band.
    widen = 1.0 + rng.uniform(0.1, 0.18) * _gauss(d, 1.2 * f.radius)
    s.vb = s.vb / widen
    # A thin lucent seam at the band's edge.
    _darken(s, d - 2.2 * band * _pm(rng), px * 1.2, 0.5)


def _sign_pathological(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    u0 = _site(f, rng)
    v0 = f.radius * rng.uniform(-0.25, 0.25)
    rl = f.radius * rng.uniform(0.8, 1.1)
    elong = rng.uniform(1.0, 1.5)
    rho = np.hypot((f.u - u0) / elong, f.v - v0) / rl
    lesion = 1.0 - _smoothstep((rho - 0.8) / 0.4)
    rim = _gauss(rho - 1.05, 0.12) * rng.uniform(0.0, 0.35)
    s.density *= (1.0 - rng.uniform(0.75, 0.9) * lesion) * (1.0 + rim)
    angle = np.pi / 2 + math.radians(rng.uniform(-25.0, 25.0))
    u_break = u0 + rng.uniform(-0.3, 0.3) * rl
    width, depth = _width(rng, px), _depth(rng)
    shift = f.radius * rng.uniform(0.05, 0.2)
    _break_line(s, f, rng, u0=u_break, angle=angle, width=width, depth=depth, shift=shift)


def _sign_dislocation(s: _Scene, f: _Frame, rng: np.random.Generator, px: float) -> None:
    s.joint_shift = _pm(rng) * f.radius * rng.uniform(1.5, 2.3)
    s.joint_angle = _pm(rng) * math.radians(rng.uniform(20.0, 45.0))
    s.joint_gap = f.radius * rng.uniform(-1.2, 0.3)  # the ends ride past each other
    u0 = _site(f, rng)
    angle = np.pi / 2 + math.radians(rng.uniform(-35.0, 35.0))
    width, depth = _width(rng, px), _depth(rng)
    shift = f.radius * rng.uniform(0.1, 0.3)
    _break_line(s, f, rng, u0=u0, angle=angle, width=width, depth=depth, shift=shift)


_SIGNS = {
    "Avulsion fracture": _sign_avulsion,
    "Comminuted fracture": _sign_comminuted,
    "Fracture Dislocation": _sign_dislocation,
    "Greenstick fracture": _sign_greenstick,
    "Hairline Fracture": _sign_hairline,
    "Impacted fracture": _sign_impacted,
    "Longitudinal fracture": _sign_longitudinal,
    "Oblique fracture": _sign_oblique,
    "Pathological fracture": _sign_pathological,
    "Spiral Fracture": _sign_spiral,
}


def _soft_tissue(u: FloatArray, v: FloatArray, half_width: float, phase: float) -> FloatArray:
    """Projected thickness (in units of ``half_width``) of an elliptic soft-tissue limb."""
    w = half_width * (1.0 + 0.12 * np.sin(u / (2.5 * half_width) + phase))
    return 2.0 * np.sqrt(np.maximum(1.0 - (v / w) ** 2, 0.0))


def _pose(rng: np.random.Generator, size: int) -> _Frame:
    """Image size and the main bone's pose: roughly top to bottom, joint end in view."""
    width = round(size * rng.uniform(0.75, 1.25))
    height = round(size * rng.uniform(0.75, 1.25))
    radius = size * rng.uniform(0.085, 0.11)
    length = size * rng.uniform(1.0, 1.35)
    alpha = math.radians(rng.uniform(-15.0, 15.0) + float(rng.choice([0.0, 180.0])))
    # The bone coordinate at the image centre: the joint end is in view.
    u_view = length / 2.0 - height * rng.uniform(0.12, 0.26)
    v_view = radius * rng.uniform(-0.8, 0.8)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs -= (width - 1) / 2.0
    ys -= (height - 1) / 2.0
    ca, sa = math.cos(alpha), math.sin(alpha)
    site_hi = length / 2.0 - 3.0 * radius
    site_lo = min(max(u_view - 0.38 * height, site_hi - 0.4 * height), site_hi - 0.05 * height)
    return _Frame(
        u=xs * sa + ys * ca + u_view,
        v=xs * ca - ys * sa + v_view,
        length=length,
        radius=radius,
        site_lo=site_lo,
        site_hi=site_hi,
        xs=xs / width,
        ys=ys / height,
    )


def _project(scene: _Scene, f: _Frame, rng: np.random.Generator) -> FloatArray:
    """Total attenuation along each ray: both bones and the soft tissue around them."""
    length, radius, u, v = f.length, f.radius, f.u, f.v
    flare = rng.uniform(0.45, 0.7)
    medulla = rng.uniform(0.6, 0.72)
    bone = _bone_attenuation(scene.ub, scene.vb, length, radius, flare=flare, medulla_ratio=medulla)
    bone = bone * np.clip(scene.density, 0.0, None) + scene.extra

    # The second bone across the joint at u = +length / 2.
    radius2 = radius * rng.uniform(0.8, 1.05)
    length2 = length * rng.uniform(0.6, 0.9)
    gap = radius * rng.uniform(0.25, 0.4) + scene.joint_gap
    ju = length / 2.0 + gap + length2 / 2.0
    cb, sb = math.cos(scene.joint_angle), math.sin(scene.joint_angle)
    pu, pv = u - length / 2.0 - gap, v - scene.joint_shift
    u2 = pu * cb + pv * sb + length / 2.0 + gap - ju
    v2 = -pu * sb + pv * cb
    bone2 = _bone_attenuation(
        u2, v2, length2, radius2, flare=rng.uniform(0.45, 0.7), medulla_ratio=medulla
    )

    # Soft tissue: a limb around each bone, joined at the joint.
    limb = radius * rng.uniform(2.8, 4.2)
    phase = rng.uniform(0.0, 6.3)
    joint_u = length / 2.0 + gap / 2.0
    w1 = _smoothstep((joint_u + radius - u) / (2.0 * radius))
    w2 = _smoothstep((u2 + ju - joint_u + radius) / (2.0 * radius))
    tissue = np.maximum(
        _soft_tissue(u, v - radius * rng.uniform(-0.6, 0.6), limb, phase) * w1,
        _soft_tissue(u2, v2, limb * rng.uniform(0.85, 1.05), phase) * w2,
    )
    mu_bone = rng.uniform(0.6, 0.8)
    mu_tissue = rng.uniform(0.12, 0.2)
    return mu_bone * (bone + bone2) + mu_tissue * tissue


def _expose(attenuation: FloatArray, f: _Frame, rng: np.random.Generator) -> Image.Image:
    """A film-like response, then a random window (brightness, contrast, gamma)."""
    img = 1.0 - np.exp(-attenuation * rng.uniform(0.9, 1.3))
    gamma = rng.uniform(0.8, 1.25)
    img = np.power(np.clip(img, 0.0, 1.0), gamma)
    floor = rng.uniform(0.02, 0.12)
    top = rng.uniform(0.8, 1.0)
    # Uneven exposure across the field.
    gx, gy = (float(g) for g in rng.normal(0.0, 0.04, size=2))
    field = 1.0 + gx * f.xs + gy * f.ys
    img = (floor + (top - floor) * img) * field
    return Image.fromarray(np.clip(img * 255.0, 0.0, 255.0).astype(np.uint8))


def render(class_name: str, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """Render one synthetic radiograph of ``class_name`` as a grayscale (mode "L") image.

    ``size`` is the nominal side in pixels; each side of the result is drawn between
    0.75x and 1.25x of it, independently, so the images vary in size and aspect. All the
    randomness (pose, scale, exposure, noise, blur, the sign's own parameters) comes from
    ``rng``: the same generator state gives the same image.

    Raises ``ValueError`` for an unknown class name or a ``size`` below 32.
    """
    return _render(class_name, rng, size, want_region=False)[0]


def render_with_sign(
    class_name: str, rng: np.random.Generator, size: int = 256
) -> tuple[Image.Image, np.ndarray]:
    """:func:`render`'s image (the same one for the same ``rng`` state) and where its sign is.

    The second value is a boolean ``(height, width)`` mask of the pixels the class's sign
    changed: the bone is projected once with the sign and once without it, from the same
    random draws, and the mask keeps where the two differ by more than 5% of the bone's
    strongest attenuation. It is what a heatmap of "where the model looked" should cover
    (the behavioural test of the service's explanations).
    """
    image, region = _render(class_name, rng, size, want_region=True)
    assert region is not None
    return image, region


def _render(
    class_name: str, rng: np.random.Generator, size: int, *, want_region: bool
) -> tuple[Image.Image, np.ndarray | None]:
    if class_name not in _SIGNS and class_name != INTACT:
        raise ValueError(f"unknown class {class_name!r}; expected one of {', '.join(CLASS_NAMES)}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE} px, got {size}")

    frame = _pose(rng, size)

    def plain_scene() -> _Scene:
        return _Scene(
            ub=frame.u,
            vb=frame.v,
            density=np.ones_like(frame.u),
            extra=np.zeros_like(frame.u),
            joint_shift=joint_shift,
            joint_angle=joint_angle,
        )

    joint_shift = float(rng.normal(0.0, 0.04) * frame.radius)
    joint_angle = float(math.radians(rng.normal(0.0, 3.0)))
    scene = plain_scene()
    px = size / 256.0  # one "pixel" of detail at the nominal 256 px size
    if class_name != INTACT:
        _SIGNS[class_name](scene, frame, rng, px)
    # _project's random draws do not depend on the scene: a copy of the generator
    # projects the unbroken bone with exactly the same exposure and anatomy
    twin = copy.deepcopy(rng) if want_region else None
    attenuation = _project(scene, frame, rng)
    region = None
    if twin is not None:
        difference = np.abs(attenuation - _project(plain_scene(), frame, twin))
        region = difference > 0.05 * float(attenuation.max())
    image = _expose(attenuation, frame, rng)

    if rng.random() < 0.5:  # a side marker burnt into a corner, as on real films
        _draw_marker(image, rng, size)
    image = image.filter(ImageFilter.GaussianBlur(radius=px * rng.uniform(0.3, 1.1)))
    noisy = np.asarray(image, dtype=np.float32)
    noisy += rng.normal(0.0, rng.uniform(2.0, 7.0), size=noisy.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0.0, 255.0).astype(np.uint8)), region


def _draw_marker(image: Image.Image, rng: np.random.Generator, size: int) -> None:
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, size // 14))
    letter = "L" if rng.random() < 0.5 else "R"
    margin = size // 20
    x = margin if rng.random() < 0.5 else image.width - margin - size // 14
    y = margin if rng.random() < 0.5 else image.height - margin - size // 12
    draw.text((x, y), letter, fill=int(rng.integers(200, 256)), font=font)


# --------------------------------------------------------------------------- dataset


def _image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """One independent stream per image, so an image does not depend on ``per_class``."""
    return np.random.default_rng([seed, class_index, index])


def _save(image: Image.Image, path_stem: Path, rng: np.random.Generator) -> Path:
    """Save as JPEG or PNG, grayscale or RGB, with explicit, deterministic options."""
    if rng.random() < 0.5:
        image = image.convert("RGB")
    if rng.random() < 0.6:
        path = path_stem.with_suffix(".jpg")
        image.save(
            path,
            format="JPEG",
            quality=int(rng.integers(80, 96)),
            optimize=False,
            progressive=False,
            subsampling=0,
        )
    else:
        path = path_stem.with_suffix(".png")
        image.save(path, format="PNG", optimize=False, compress_level=_PNG_COMPRESS_LEVEL)
    return path


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"output folder {out_dir} exists and is not empty; choose a new one")


@contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A hidden temporary sibling of ``out_dir`` to write into, renamed to ``out_dir``
    when the block ends and deleted if it raises (or is interrupted), so a dataset is
    either complete where the user asked for it or absent: never half-written.

    Raises ``ValueError`` naming ``out_dir`` (not the temporary folder) when the sibling
    cannot be created, and when ``out_dir`` was filled by someone else meanwhile.
    """
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as exc:  # name the folder the user gave, not our temporary one
        raise ValueError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private; the dataset is not secret
        _check_out_dir(out_dir)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_dataset(
    out_dir: Path,
    per_class: int = 40,
    size: int = 256,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> dict[str, Any]:
    """Write a synthetic dataset in the Kaggle layout and return a summary of it.

    The layout is ``<out_dir>/<Class>/Train/*.{jpg,png}`` and ``<out_dir>/<Class>/Test/...``
    with ``per_class`` images per class, ``round(per_class * test_fraction)`` of them (at
    least one, and at least one left for training) in ``Test``. The same arguments give
    byte-identical files. Everything is written into a hidden temporary sibling of
    ``out_dir`` that is renamed into place at the end, so an interrupted run leaves no
    half-written dataset.

    Returns ``{"out_dir", "per_class", "size", "seed", "classes": {name: {"Train": n,
    "Test": m}}, "total": {"Train": n, "Test": m}}``.

    Raises ``ValueError`` (one-line message, nothing written) when ``out_dir`` exists and is
    not an empty folder, ``per_class < 2``, ``size < 32`` or ``test_fraction`` is not
    strictly between 0 and 1.
    """
    out_dir = Path(out_dir)
    if per_class < _MIN_PER_CLASS:
        raise ValueError(f"per_class must be at least {_MIN_PER_CLASS}, got {per_class}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE} px, got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    _check_out_dir(out_dir)

    n_test = min(max(round(per_class * test_fraction), 1), per_class - 1)
    counts = {SPLITS[0]: per_class - n_test, SPLITS[1]: n_test}
    with _staged(out_dir) as staging:
        for ci, name in enumerate(CLASS_NAMES):
            index = 0
            for split in SPLITS:
                folder = staging / name / split
                folder.mkdir(parents=True)
                for _ in range(counts[split]):
                    rng = _image_rng(seed, ci, index)
                    image = render(name, rng, size)
                    _save(image, folder / f"synth_{seed}_{ci:02d}_{index:05d}", rng)
                    index += 1

    classes = {name: dict(counts) for name in CLASS_NAMES}
    return {
        "out_dir": str(out_dir),
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "classes": classes,
        "total": {split: counts[split] * len(CLASS_NAMES) for split in SPLITS},
    }


def write_detection_dataset(
    out_dir: Path, per_class: int = 40, size: int = 256, seed: int = 0
) -> dict[str, Any]:
    """Write a fracture-detection set: ``Fractured/`` bones (the ten signs in turn) and
    ``Non_fractured/`` intact ones, with the signs' outlines in a COCO file beside them.

    Each fractured image's outline is the bounding rectangle of the pixels its sign
    changed (:func:`render_with_sign`), as a COCO polygon in the image's pixels, so the
    tests can check detection *and* localisation without any dataset. Written into a
    hidden sibling and renamed into place, like :func:`write_dataset`.
    """
    out_dir = Path(out_dir)
    if per_class < _MIN_PER_CLASS:
        raise ValueError(f"per_class must be at least {_MIN_PER_CLASS}, got {per_class}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE} px, got {size}")
    _check_out_dir(out_dir)
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 0, "name": "fractured"}],
    }
    with _staged(out_dir) as staging:
        for folder_index, folder in enumerate(DETECTION_FOLDERS):
            (staging / folder).mkdir()
            for index in range(per_class):
                rng = _image_rng(seed, 100 + folder_index, index)
                name = CLASS_NAMES[index % len(CLASS_NAMES)] if folder_index == 0 else INTACT
                image, region = render_with_sign(name, rng, size)
                path = _save(
                    image, staging / folder / f"synth_{seed}_{folder_index}_{index:05d}", rng
                )
                if folder_index == 0 and region.any():
                    image_id = len(coco["images"]) + 1
                    ys, xs = np.nonzero(region)
                    x0, y0 = float(xs.min()), float(ys.min())
                    x1, y1 = float(xs.max() + 1), float(ys.max() + 1)
                    coco["images"].append(
                        {
                            "id": image_id,
                            "file_name": path.name,
                            "width": image.width,
                            "height": image.height,
                        }
                    )
                    coco["annotations"].append(
                        {
                            "id": len(coco["annotations"]),
                            "image_id": image_id,
                            "category_id": 0,
                            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": (x1 - x0) * (y1 - y0),
                            "iscrowd": 0,
                        }
                    )
        (staging / DETECTION_COCO).write_text(json.dumps(coco), encoding="utf-8")
    return {
        "out_dir": str(out_dir),
        "per_class": per_class,
        "outlined": len(coco["annotations"]),
    }


# --------------------------------------------------------------------------- contact sheet


def contact_sheet(out_path: Path, seed: int = 0, per_class: int = 4, size: int = 128) -> None:
    """Write a PNG grid of samples: one row per class, labelled with the class name.

    Each sample is the image :func:`write_dataset` would write first for that class and
    seed (before the file-format step), fitted into a ``size`` x ``size`` cell.
    """
    out_path = Path(out_path)
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE} px, got {size}")
    pad = 4
    label_w = 170
    font = ImageFont.load_default(size=14)
    sheet_w = label_w + per_class * (size + pad) + pad
    sheet_h = len(CLASS_NAMES) * (size + pad) + pad
    sheet = Image.new("L", (sheet_w, sheet_h), color=40)
    draw = ImageDraw.Draw(sheet)
    for ci, name in enumerate(CLASS_NAMES):
        top = pad + ci * (size + pad)
        draw.text((8, top + size // 2), name, fill=235, font=font, anchor="lm")
        for i in range(per_class):
            image = render(name, _image_rng(seed, ci, i), size)
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            cell = Image.new("L", (size, size), color=0)
            cell.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
            sheet.paste(cell, (label_w + i * (size + pad), top))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path, format="PNG", optimize=False, compress_level=9)
