"""Text of the synthetic world: dense ground-truth captions and noisy web-like alt texts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from pipelines.synth.world import ObjectSpec

MOTION_PHRASES = {
    "left": "moves left", "right": "moves right", "up": "moves up", "down": "moves down",
    "growing": "grows", "shrinking": "shrinks", "spinning": "spins in place",
    "still": "stays still",
}
CAMERA_PHRASES = {"static": "the camera is static", "pan left": "the camera pans left",
                  "pan right": "the camera pans right"}
BLANK_CAPTIONS = {"black": "A completely black frame.",
                  "noise": "Random colour noise fills the frame."}

SHAPE_WORDS = {"circle": ("circle", "ball", "dot"), "square": ("square", "box", "block"),
               "triangle": ("triangle", "pyramid"), "star": ("star",),
               "hexagon": ("hexagon", "hex")}
COLOR_WORDS = {"gray": ("gray", "grey"), "purple": ("purple", "violet")}
ALT_TEMPLATES = ("{color} {shape}", "{shape}", "{color} {shape} on {bg}", "{shape} video",
                 "{color} {shape} animation", "shape video", "{bg} background")
WRONG_TEMPLATES = ("{color} {shape}", "{color} {shape} on {bg}", "{color} {shape} animation")
BLANK_ALT_TEXTS = ("video", "clip", "shape video", "animation", "untitled", "IMG_0412")
MISSPELL_PROB = 0.15


def caption_for(objects: Sequence[ObjectSpec], background: str, camera: str) -> str:
    """Dense caption naming every object (size, colour, shape, motion), background and camera.

    >>> caption_for([], "black", "static")
    'A completely black frame.'
    """
    if not objects:
        return BLANK_CAPTIONS[background]
    parts = [f"a {o.size} {o.color} {o.shape} {MOTION_PHRASES[o.motion]}" for o in objects]
    sentence = " and ".join(parts)
    return f"{sentence[0].upper()}{sentence[1:]} over a {background} background; " \
           f"{CAMERA_PHRASES[camera]}."


def alt_text_for(rng: np.random.Generator, objects: Sequence[ObjectSpec], background: str,
                 wrong: bool, colors: Sequence[str], shapes: Sequence[str]) -> tuple[str, bool]:
    """Short noisy alt text for one object of the shot; ``wrong`` swaps its colour and/or shape.

    ``colors`` and ``shapes`` are the vocabulary a wrong alt text draws from. Returns
    (text, wrong): a wrong alt text always names a colour or shape absent from the shot.
    """
    obj = objects[int(rng.integers(len(objects)))]
    color, shape = obj.color, obj.shape
    if wrong:
        absent_colors = [c for c in colors if c not in {o.color for o in objects}]
        absent_shapes = [s for s in shapes if s not in {o.shape for o in objects}]
        swap = int(rng.integers(3))  # 0: colour, 1: shape, 2: both
        color = str(rng.choice(absent_colors)) if swap in (0, 2) else color
        shape = str(rng.choice(absent_shapes)) if swap in (1, 2) else shape
    templates = WRONG_TEMPLATES if wrong else ALT_TEMPLATES
    template = templates[int(rng.integers(len(templates)))]
    text = template.format(color=_pick(rng, COLOR_WORDS.get(color, (color,))),
                           shape=_pick(rng, SHAPE_WORDS[shape]), bg=background)
    return _add_noise(rng, text), wrong


def blank_alt_text(rng: np.random.Generator) -> str:
    """Generic alt text for a black or noise shot (web pages rarely describe these)."""
    return str(rng.choice(BLANK_ALT_TEXTS))


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _add_noise(rng: np.random.Generator, text: str) -> str:
    """Web-style noise: mostly lowercase, sometimes capitalised or upper case, rare typos."""
    if rng.random() < MISSPELL_PROB:
        text = _misspell(rng, text)
    style = rng.random()
    if style < 0.6:
        return text.lower()
    if style < 0.85:
        return text.capitalize()
    return text.title() if style < 0.95 else text.upper()


def _misspell(rng: np.random.Generator, text: str) -> str:
    """Swap two adjacent letters or drop one letter in one word of four letters or more."""
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 4]
    if not long_words:
        return text
    i = long_words[int(rng.integers(len(long_words)))]
    w = words[i]
    k = int(rng.integers(1, len(w) - 1))
    words[i] = w[:k] + w[k + 1] + w[k] + w[k + 2:] if rng.random() < 0.5 else w[:k] + w[k + 1:]
    return " ".join(words)
