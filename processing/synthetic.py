"""A deterministic synthetic word renderer and a small STR benchmark built from it.

Words come from `processing/wordlist.txt` (about 4,000 entries: common English words taken from the
docstrings of Python's standard library, plus numbers, prices, times, upper-/title-case words and words
with punctuation), fonts from matplotlib's bundled TrueType fonts (DejaVu Sans/Serif/Mono and their bold
and oblique variants, STIX, Computer Modern). Each image gets a font size, text and background colours
(solid, gradient or textured), padding, rotation, perspective and blur drawn from a `random.Random`, so
the same seed gives byte-identical images on any number of worker processes.

Any alphabet: `charset` and `wordlist` choose the characters and words (e.g. configs/charsets/latin_greek.txt with
processing/wordlist_latin_greek.txt), and a word is only drawn in fonts whose character map covers every one of its
characters (`font_covers`; the DejaVu and STIX faces cover Latin, Greek and Cyrillic). A word no font of the level
can draw is an error naming it and the missing characters, never a box of missing-glyph squares with a label.

`build_synthetic_benchmark` writes PARSeq's layout, `output_root/{train,val,test}/<name>/data.mdb`, with
val and test words held out of training, so test accuracy measures reading, not memorising. With
`random_fraction`, that share of the training images shows random alphanumeric strings instead of words: a
small model then cannot lean on the ~3,200 training words it would otherwise memorise (its decoder's language
prior), and reads held-out words far better in the same number of steps.
"""

from __future__ import annotations

import io
import math
import os
import random
import unicodedata
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .augmentation import perspective_coefficients
from .charsets import CHARSET_94, evaluation_charset, is_ascii_charset
from .fonts import FontFace, FontSplit, discover_fonts, face_characters, matplotlib_font_dir, split_font_families
from .lmdb_writer import write_str_lmdb

WORDLIST_PATH = Path(__file__).with_name("wordlist.txt")

# Fonts with a proper Unicode map for all 94 printable ASCII characters.
UNICODE_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
# Computer Modern fonts map code points to TeX (OT1) slots: letters and digits are right, most
# punctuation is another glyph, so they only render words made of letters and digits.
TEX_FONTS = ("cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf")


@dataclass(frozen=True)
class Difficulty:
    """The ranges one difficulty level draws from."""

    font_size: tuple[int, int]
    min_contrast: float  # luminance difference between text and background, 0..255
    max_rotation: float  # degrees
    perspective_p: float
    max_perspective: float  # corner shift as a fraction of the image height
    blur_p: float
    max_blur: float  # Gaussian radius in pixels
    noise_p: float
    max_noise: float  # standard deviation of additive noise, 0..255
    case_p: float  # chance a lower-case word is shown in Title or UPPER case
    fonts: tuple[str, ...] | None = None  # None: every bundled font (levels drawn from a font split ignore it)
    # The fields below default to "off", which keeps the classic levels' images byte-identical.
    font_categories: tuple[str, ...] | None = None  # font-split levels: the categories drawn (None: all)
    dark_on_light: bool = False  # light solid/gradient/paper background, dark text (the "clean" test words)
    natural_p: float = 0.0  # procedural natural background (clouds, stripes, paper grain, blobs, tiles)
    spacing_p: float = 0.0  # letters set one by one with extra (or less) spacing
    max_spacing: float = 0.0  # as a fraction of the font size
    outline_p: float = 0.0  # a border (stroke) around the glyphs
    shadow_p: float = 0.0  # a drop shadow, sometimes soft
    curve_p: float = 0.0  # the baseline bent into an arc
    max_curve: float = 0.0  # arc height as a fraction of the image height
    neighbour_p: float = 0.0  # the crop cuts into neighbouring words (left/right, or the lines above/below)
    low_res_p: float = 0.0  # down- and up-sampled (a distant, low-resolution capture)
    jpeg_p: float = 0.0  # saved and reloaded as a low-quality JPEG
    symbol_p: float = 0.0  # punctuation around a word ("(word)", "word,", "#42") and symbols in random strings
    mix: tuple[tuple[str, float], ...] = ()  # a training mix: each image draws its level from these weights


DIFFICULTIES = {
    # Three upright DejaVu faces, high contrast, no geometric distortion: the quickstart's default, where a reduced
    # model trained from scratch learns to read unseen words within CPU minutes.
    "clean": Difficulty(
        (24, 30), 150.0, 0.0, 0.0, 0.0, 0.2, 0.5, 0.2, 4.0, 0.1,
        fonts=("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"),
    ),
    # Clean, legible words with mild distortion: what a small model can learn to >= 90% in minutes.
    "easy": Difficulty((22, 30), 110.0, 3.0, 0.3, 0.06, 0.3, 0.6, 0.2, 6.0, 0.2),
    "medium": Difficulty((18, 34), 80.0, 8.0, 0.5, 0.12, 0.4, 1.0, 0.4, 12.0, 0.3),
    "hard": Difficulty((14, 40), 50.0, 15.0, 0.7, 0.2, 0.5, 1.6, 0.6, 20.0, 0.4),
    # Levels for font-disjoint splits (build_synthetic_benchmark(fonts="disjoint")): the faces come from the split.
    # Clean words: dark text on a light, plain background in a text face (sans, serif, mono), upright.
    "dark_on_light": Difficulty(
        (22, 34), 120.0, 1.0, 0.0, 0.0, 0.2, 0.6, 0.2, 4.0, 0.25, font_categories=("sans", "serif", "mono"),
        dark_on_light=True, spacing_p=0.1, max_spacing=0.12,
    ),
    # Any colours and faces (display faces too), spacing, borders, shadows, mild geometry.
    "varied": Difficulty(
        (18, 38), 70.0, 4.0, 0.3, 0.08, 0.3, 1.0, 0.3, 8.0, 0.35, natural_p=0.2, spacing_p=0.25,
        max_spacing=0.2, outline_p=0.15, shadow_p=0.2, curve_p=0.1, max_curve=0.15, neighbour_p=0.2, low_res_p=0.1,
        jpeg_p=0.2, symbol_p=0.1,
    ),
    # The hardest: natural textures, low contrast, shadows, borders, blur, noise, JPEG, perspective, curvature,
    # crops into neighbouring text, mixed case and symbols.
    "textured": Difficulty(
        (16, 40), 55.0, 8.0, 0.5, 0.14, 0.5, 1.4, 0.5, 14.0, 0.5, natural_p=0.85, spacing_p=0.3, max_spacing=0.25,
        outline_p=0.25, shadow_p=0.35, curve_p=0.25, max_curve=0.25, neighbour_p=0.4, low_res_p=0.25, jpeg_p=0.4,
        symbol_p=0.3,
    ),
    # The training mix of the font-disjoint quickstart: half clean words, the rest varied and (15%) textured.
    "diverse": Difficulty(
        (16, 40), 55.0, 8.0, 0.5, 0.14, 0.5, 1.4, 0.5, 14.0, 0.5,
        mix=(("dark_on_light", 0.5), ("varied", 0.35), ("textured", 0.15)),
    ),
    # The 2-hour CPU recipe's mix (configs/synth_dig_small_cpu.yaml): a larger model trained longer has room for the
    # hardest level, so it draws the most images (45%) from it; a third stay clean, the rest are varied.
    "diverse_textured": Difficulty(
        (16, 40), 55.0, 8.0, 0.5, 0.14, 0.5, 1.4, 0.5, 14.0, 0.5,
        mix=(("dark_on_light", 0.35), ("varied", 0.2), ("textured", 0.45)),
    ),
}


def load_wordlist(path: str | os.PathLike = WORDLIST_PATH, charset: str | None = CHARSET_94) -> list[str]:
    """The words of a word list (one UTF-8 word per line, composed to NFC as labels are), keeping only those made of
    `charset` characters."""
    words = [unicodedata.normalize("NFC", line.strip()) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    allowed = set(charset) if charset is not None else None
    words = [w for w in words if w and (allowed is None or set(w) <= allowed)]
    if not words:
        raise ValueError(f"{path} has no words made of the requested charset")
    return list(dict.fromkeys(words))  # de-duplicated, order kept


def font_dir() -> Path:
    return matplotlib_font_dir()


def _font_path(name: str) -> str:
    """A bundled matplotlib font's file name, or any font file's path."""
    return name if os.sep in name or "/" in name else str(font_dir() / name)


@lru_cache(maxsize=2048)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_font_path(name), size)


def _luminance(color: tuple[int, int, int]) -> float:
    r, g, b = color
    return 0.299 * r + 0.587 * g + 0.114 * b


def _colors(rng: random.Random, min_contrast: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A (text, background) pair whose luminances differ by at least `min_contrast`."""
    while True:  # a background that leaves room for the contrast on one side
        background = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if max(_luminance(background), 255 - _luminance(background)) >= min_contrast + 10:
            break
    while True:
        text = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if abs(_luminance(background) - _luminance(text)) >= min_contrast:
            return text, background


def _background(rng: random.Random, size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    """Solid, a linear gradient to a nearby colour, or the colour with a smoothed noise texture."""
    width, height = size
    kind = rng.random()
    if kind < 0.5:
        return Image.new("RGB", size, color)
    base = np.array(color, dtype=np.float32)
    if kind < 0.8:
        other = np.clip(base + np.array([rng.uniform(-60, 60) for _ in range(3)], dtype=np.float32), 0, 255)
        horizontal = rng.random() < 0.5
        steps = np.linspace(0.0, 1.0, width if horizontal else height, dtype=np.float32)
        ramp = base + steps[:, None] * (other - base)  # [steps, 3]
        pixels = np.broadcast_to(ramp[None] if horizontal else ramp[:, None], (height, width, 3))
        return Image.fromarray(pixels.astype(np.uint8))
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, rng.uniform(8, 25), (height, width, 1))
    texture = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    return texture.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))


def _perspective(image: Image.Image, rng: random.Random, amount: float, fill: tuple[int, int, int]) -> Image.Image:
    """Move each corner by up to `amount` x height and warp (PIL maps output -> input coordinates)."""
    width, height = image.size
    shift = amount * height
    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    moved = [(x + rng.uniform(-shift, shift), y + rng.uniform(-shift, shift)) for x, y in corners]
    coefficients = perspective_coefficients(corners, moved)  # output corner -> where it samples the input
    return image.transform(
        image.size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR, fillcolor=fill
    )


@lru_cache(maxsize=64)
def font_characters(name: str) -> frozenset[str]:
    """The characters a bundled font draws: its Unicode character map (Computer Modern: letters and digits only,
    its other code points hold TeX glyphs)."""
    return face_characters(_font_path(name))


def font_covers(name: str, text: str) -> bool:
    """True when the font has a glyph for every character of `text`."""
    return set(text) <= font_characters(name)


def _pick_font(word: str, rng: random.Random, level: Difficulty) -> str:
    fonts = level.fonts if level.fonts is not None else UNICODE_FONTS + TEX_FONTS
    covering = [name for name in fonts if font_covers(name, word)]
    if not covering:
        missing = sorted(set(word) - set().union(*(font_characters(name) for name in fonts)))
        raise ValueError(
            f"no font of this difficulty draws {word!r}: {missing} are missing from all of {list(fonts)}; drop those "
            "characters from the charset / word list or choose a level with other fonts"
        )
    return rng.choice(covering)


def _pick_face(word: str, rng: random.Random, level: Difficulty, faces: Sequence[FontFace]) -> str:
    """A face of a font split for `word`: a family first (uniformly, so a family with 14 weights does not outvote
    one with a single face), then one of its styles; only faces whose character map covers the word."""
    usable = [f for f in faces if level.font_categories is None or f.category in level.font_categories] or list(faces)
    covering = [f for f in usable if set(word) <= face_characters(f.path)]
    if not covering:
        missing = sorted(set(word) - set().union(*(face_characters(f.path) for f in usable)))
        raise ValueError(
            f"no font of this split draws {word!r}: {missing} are missing from all of its "
            f"{sorted({f.family for f in usable})}; drop those characters from the charset / word list"
        )
    family = rng.choice(sorted({f.family for f in covering}))
    return rng.choice([f.path for f in covering if f.family == family])


def resolve_level(difficulty: str | Difficulty, rng: random.Random) -> Difficulty:
    """The level an image is drawn at: a mix level picks one of its parts with `rng`."""
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
        difficulty = DIFFICULTIES[difficulty]
    if difficulty.mix:
        names, weights = zip(*difficulty.mix)
        return DIFFICULTIES[rng.choices(names, weights)[0]]
    return difficulty


def _light_dark_colors(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Dark text on a light background (paper, signs, screens)."""
    grey = rng.random() < 0.6
    light = rng.randint(200, 255)
    background = (light, light, light) if grey else tuple(rng.randint(185, 255) for _ in range(3))
    dark = rng.randint(0, 70)
    text = (dark, dark, dark) if rng.random() < 0.6 else tuple(rng.randint(0, 110) for _ in range(3))
    while abs(_luminance(background) - _luminance(text)) < 120:
        text = tuple(max(0, c - 30) for c in text)
    return text, background


def _value_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid, bicubically enlarged."""
    width, height = size
    grid = rng.random((max(2, cells * height // max(width, 1) + 2), cells + 2)).astype(np.float32)
    enlarged = Image.fromarray((grid * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(enlarged, dtype=np.float32) / 255.0


def _natural_background(rng: random.Random, size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    """A procedural stand-in for photographed surfaces around the mean `color`: clouds (multi-scale noise), wood or
    brushed-metal stripes, paper grain, colour blobs or tiles."""
    width, height = size
    noise_rng = np.random.default_rng(rng.getrandbits(32))
    base = np.array(color, dtype=np.float32)
    kind = rng.randrange(5)
    if kind == 0:  # clouds / stone
        field = sum(_value_noise(noise_rng, size, cells) / (i + 1) for i, cells in enumerate((3, 8, 20)))
        field = (field - field.mean())[..., None] * rng.uniform(40, 110)
        tint = np.array([rng.uniform(-1, 1) for _ in range(3)], dtype=np.float32)
        pixels = base + field * (1.0 + 0.5 * tint)
    elif kind == 1:  # wood grain / brushed metal: stretched stripes
        x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
        y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
        warp = _value_noise(noise_rng, size, 4) * rng.uniform(2, 6)
        stripes = np.sin(2 * np.pi * (rng.uniform(3, 12) * (y if rng.random() < 0.7 else x) + warp))
        pixels = base + (stripes * rng.uniform(10, 35))[..., None] + noise_rng.normal(0, 4, (height, width, 1))
    elif kind == 2:  # paper: fine grain and a few fibres
        pixels = base + noise_rng.normal(0, rng.uniform(4, 12), (height, width, 1))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(2, 8)):
            x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
            shade = tuple(int(np.clip(c + rng.uniform(-40, 40), 0, 255)) for c in color)
            draw.line([(x0, y0), (x0 + rng.uniform(-30, 30), y0 + rng.uniform(-8, 8))], fill=shade, width=1)
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    elif kind == 3:  # out-of-focus colour blobs
        image = Image.new("RGB", size, color)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(3, 9)):
            x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.5, 1.0) * height
            radius = rng.uniform(0.2, 0.8) * height
            shade = tuple(int(np.clip(c + rng.uniform(-70, 70), 0, 255)) for c in color)
            draw.ellipse([x0, y0, x0 + 2 * radius, y0 + 2 * radius], fill=shade)
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(2.0, 6.0)))
    else:  # tiles / bricks: a grid of slightly different cells with darker joints
        image = Image.new("RGB", size, color)
        draw = ImageDraw.Draw(image)
        cell_w, cell_h = rng.uniform(0.6, 2.5) * height, rng.uniform(0.4, 1.2) * height
        joint = tuple(int(np.clip(c - rng.uniform(25, 60), 0, 255)) for c in color)
        for row in range(int(height / cell_h) + 2):
            offset = (row % 2) * cell_w / 2
            for column in range(int(width / cell_w) + 2):
                x0, y0 = column * cell_w - offset, row * cell_h
                shade = tuple(int(np.clip(c + rng.uniform(-18, 18), 0, 255)) for c in color)
                draw.rectangle([x0, y0, x0 + cell_w, y0 + cell_h], fill=shade, outline=joint)
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _text_layout(word: str, font: ImageFont.FreeTypeFont, spacing: float) -> tuple[list[tuple[str, float]], tuple]:
    """Where each piece of `word` starts on the line ([(text, x)]) and the line's bounding box. Without extra
    spacing the word is one piece (the font's own kerning applies); with it, each character is placed by its
    advance plus the spacing."""
    if spacing == 0.0:
        return [(word, 0.0)], font.getbbox(word)
    pieces, x = [], 0.0
    for char in word:
        pieces.append((char, x))
        x += font.getlength(char) + spacing
    boxes = [font.getbbox(char) for char in word]
    left = min(px + box[0] for (_, px), box in zip(pieces, boxes))
    right = max(px + box[2] for (_, px), box in zip(pieces, boxes))
    return pieces, (left, min(b[1] for b in boxes), right, max(b[3] for b in boxes))


def _curve(image: Image.Image, rng: random.Random, amount: float) -> Image.Image:
    """Bend the baseline into an arc: each column moves up or down by a parabola (edge pixels fill the gaps)."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    amplitude = amount * height * (1 if rng.random() < 0.5 else -1)
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    shift = np.rint(amplitude * (x ** 2 - 0.5)).astype(np.int64)  # [width]
    rows = np.clip(np.arange(height)[:, None] + shift[None, :], 0, height - 1)  # output (y, x) <- input row
    return Image.fromarray(np.ascontiguousarray(pixels[rows, np.arange(width)[None, :]]))


def render_word(
    word: str, rng: random.Random, difficulty: str | Difficulty = "easy", faces: Sequence[FontFace] | None = None,
) -> Image.Image:
    """Render `word` as an RGB image; every random choice comes from `rng` (same state -> same bytes). `faces`: draw
    in one of these font files (a font split's), not in the level's bundled fonts."""
    level = resolve_level(difficulty, rng)
    if not word:
        raise ValueError("cannot render an empty word")
    font_name = _pick_font(word, rng, level) if faces is None else _pick_face(word, rng, level, faces)
    font = _font(font_name, rng.randint(*level.font_size))
    if level.dark_on_light:
        text_color, background_color = _light_dark_colors(rng)
    else:
        text_color, background_color = _colors(rng, level.min_contrast)
    spacing = 0.0
    if level.spacing_p and rng.random() < level.spacing_p:
        spacing = rng.uniform(-0.3, 1.0) * level.max_spacing * font.size
    pieces, (left, top, right, bottom) = _text_layout(word, font, spacing)
    stroke = 0
    if level.outline_p and rng.random() < level.outline_p:
        stroke = max(1, round(font.size * rng.uniform(0.03, 0.08)))

    pad_x = int(rng.uniform(0.1, 0.5) * font.size) + 1 + stroke
    pad_y = int(rng.uniform(0.1, 0.35) * font.size) + 1 + stroke
    size = (int(right - left) + 2 * pad_x, bottom - top + 2 * pad_y)
    if level.natural_p and rng.random() < level.natural_p:
        image = _natural_background(rng, size, background_color)
    elif level.dark_on_light:
        image = _background(rng, size, background_color) if rng.random() < 0.5 else Image.new("RGB", size,
                                                                                             background_color)
    else:
        image = _background(rng, size, background_color)
    draw = ImageDraw.Draw(image)
    origin = (pad_x - left, pad_y - top)

    if level.neighbour_p and rng.random() < level.neighbour_p:  # parts of the words around this one
        space = font.getlength(" ") * rng.uniform(0.8, 1.6)
        neighbour = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(3, 8)))
        if rng.random() < 0.7:  # the same line: words to the left and right
            draw.text((origin[0] - space - font.getlength(neighbour), origin[1]), neighbour, font=font,
                      fill=text_color)
            draw.text((origin[0] + (right - left) + space, origin[1]), neighbour[::-1], font=font, fill=text_color)
        else:  # the lines above and below
            line = (bottom - top) * rng.uniform(1.05, 1.35)
            draw.text((origin[0] + rng.uniform(-20, 5), origin[1] - line), neighbour * 3, font=font, fill=text_color)
            draw.text((origin[0] + rng.uniform(-20, 5), origin[1] + line), neighbour[::-1] * 3, font=font,
                      fill=text_color)
    if level.shadow_p and rng.random() < level.shadow_p:
        offset = (rng.choice((-1, 1)) * rng.uniform(1, 0.12 * font.size + 1), rng.uniform(1, 0.12 * font.size + 1))
        mask = Image.new("L", size, 0)
        mask_draw = ImageDraw.Draw(mask)
        for piece, x in pieces:
            mask_draw.text((origin[0] + x + offset[0], origin[1] + offset[1]), piece, font=font, fill=255,
                           stroke_width=stroke)
        if rng.random() < 0.5:
            mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
        shade = tuple(int(c * 0.35) for c in background_color) if _luminance(background_color) > 90 else (
            tuple(min(255, int(c + 120)) for c in background_color))
        image.paste(Image.new("RGB", size, shade), (0, 0), mask)
        draw = ImageDraw.Draw(image)
    outline_color = tuple(255 - c for c in text_color) if stroke else None
    for piece, x in pieces:
        draw.text((origin[0] + x, origin[1]), piece, font=font, fill=text_color, stroke_width=stroke,
                  stroke_fill=outline_color)
    if level.curve_p and rng.random() < level.curve_p:
        image = _curve(image, rng, rng.uniform(0.05, level.max_curve))

    angle = rng.uniform(-level.max_rotation, level.max_rotation)
    if abs(angle) > 0.5:
        image = image.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=background_color)
    if rng.random() < level.perspective_p:
        image = _perspective(image, rng, rng.uniform(0, level.max_perspective), background_color)
    if rng.random() < level.blur_p:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, level.max_blur)))
    if rng.random() < level.noise_p:
        noise_rng = np.random.default_rng(rng.getrandbits(32))
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + noise_rng.normal(0.0, rng.uniform(1.0, level.max_noise), pixels.shape[:2] + (1,))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if level.low_res_p and rng.random() < level.low_res_p:
        factor = rng.uniform(1.5, 3.0)
        small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
        image = image.resize(small, Image.Resampling.BILINEAR).resize(image.size, Image.Resampling.BILINEAR)
    if level.jpeg_p and rng.random() < level.jpeg_p:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(15, 60))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def vary_case(word: str, rng: random.Random, probability: float, allowed: frozenset[str] | None = None) -> str:
    """Show a lower-case word in Title or UPPER case with the given probability (signs are often capitalised).
    A case change that leaves `allowed` (e.g. "ΐ".upper() is two code points) keeps the word as it is."""
    if word.islower() and rng.random() < probability:
        varied = word.title() if rng.random() < 0.6 else word.upper()
        return varied if allowed is None or set(varied) <= allowed else word
    return word


RANDOM_STRING_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
# Lengths weighted like the word list's (mostly 3-8 characters, a few short and long ones).
RANDOM_STRING_LENGTHS = (1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 10, 11, 12)


def random_string(
    rng: random.Random, upper_case_p: float = 0.15, characters: str = RANDOM_STRING_CHARS,
    allowed: frozenset[str] | None = None,
) -> str:
    """A random "word" of `characters` (lower case, or upper case with `upper_case_p` when its upper case stays in
    `allowed`)."""
    text = "".join(rng.choice(characters) for _ in range(rng.choice(RANDOM_STRING_LENGTHS)))
    if rng.random() < upper_case_p:
        upper = text.upper()
        return upper if allowed is None or set(upper) <= allowed else text
    return text


def random_characters(charset: str | None) -> str:
    """What random strings are made of: a-z0-9 for an ASCII charset (the quickstart's), else the charset's letters
    and digits, lower-cased (`evaluation_charset`)."""
    return RANDOM_STRING_CHARS if is_ascii_charset(charset) else evaluation_charset(charset)


def split_vocabulary(words: list[str], held_out_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train words, held-out words), split by lower-cased form so "Stop" cannot leak into train as "stop"."""
    keys = sorted({w.lower() for w in words})
    random.Random(f"vocab-{seed}").shuffle(keys)
    held_out_keys = set(keys[: max(1, round(held_out_fraction * len(keys)))])
    train = [w for w in words if w.lower() not in held_out_keys]
    held_out = [w for w in words if w.lower() in held_out_keys]
    if not train:
        raise ValueError("held_out_fraction leaves no training words")
    return train, held_out


SYMBOL_FORMS = ("({})", "{},", "{}.", "{}!", "{}?", '"{}"', "'{}'", "{}:", "#{}", "{};", "[{}]", "{}-", "-{}",
                "${}", "{}%", "@{}", "{}&", "*{}", "{}/", "+{}")


def add_symbols(word: str, rng: random.Random, probability: float, allowed: frozenset[str] | None = None) -> str:
    """With `probability`, punctuation around the word as on signs and in text: "(word)", "word,", "#42", "$9"."""
    if not probability or rng.random() >= probability:
        return word
    decorated = rng.choice(SYMBOL_FORMS).format(word)
    return decorated if allowed is None or set(decorated) <= allowed else word


def _random_label(rng: random.Random, level: Difficulty, charset: str | None, allowed: frozenset[str] | None) -> str:
    """A random string: a-z0-9 (or the charset's letters and digits); levels with symbols also mix the case
    and put punctuation inside."""
    if not level.symbol_p:
        return random_string(rng, characters=random_characters(charset), allowed=allowed)
    letters = random_characters(charset)
    mixed = "".join(dict.fromkeys(letters + "".join(c.upper() for c in letters if len(c.upper()) == 1)))
    text = random_string(rng, upper_case_p=0.0, characters=mixed, allowed=allowed)
    symbols = [c for c in (charset if charset is not None else CHARSET_94) if not c.isalnum() and not c.isspace()]
    if symbols:
        text = "".join(rng.choice(symbols) if rng.random() < level.symbol_p / 4 else c for c in text)
    return text if allowed is None or set(text) <= allowed else random_string(rng, characters=letters, allowed=allowed)


def _render_sample(
    split: str, seed: int, index: int, words: list[str], difficulty: str, random_fraction: float = 0.0,
    charset: str | None = None, faces: Sequence[FontFace] | None = None,
) -> tuple[bytes, str]:
    """Render sample `index` of a split: its own seeded RNG picks the word, so workers need no shared state. Labels
    stay inside `charset` (None: no limit); `faces`: the split's fonts (None: the level's bundled fonts)."""
    rng = random.Random(f"{seed}-{split}-{index}")
    level = resolve_level(difficulty, rng)
    allowed = frozenset(charset) if charset is not None else None
    if random_fraction > 0 and rng.random() < random_fraction:
        word = _random_label(rng, level, charset, allowed)
    else:
        word = vary_case(rng.choice(words), rng, level.case_p, allowed)
        word = add_symbols(word, rng, level.symbol_p, allowed)
    buffer = io.BytesIO()
    render_word(word, rng, level, faces).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), word


def _render_chunk(args: tuple) -> list[tuple[bytes, str]]:
    split, seed, start, stop, words, difficulty, random_fraction, charset, faces = args
    return [_render_sample(split, seed, index, words, difficulty, random_fraction, charset, faces)
            for index in range(start, stop)]


def render_split(
    split: str,
    num_samples: int,
    words: list[str],
    seed: int,
    difficulty: str = "easy",
    num_workers: int = 0,
    random_fraction: float = 0.0,
    charset: str | None = None,
    faces: Sequence[FontFace] | None = None,
) -> Iterator[tuple[bytes, str]]:
    """Yield `(png_bytes, label)` for one split, in index order whatever the number of workers; random strings and
    case changes stay inside `charset` (None: a-z0-9 random strings, any case change). `faces`: the fonts drawn
    (a font split's; None: the level's bundled fonts)."""
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
    faces = tuple(faces) if faces is not None else None
    if faces is not None and not faces:
        raise ValueError(f"the {split} split has no fonts: the font split gave it no family that draws the charset")
    chunk = 256  # the word list travels once per chunk, not once per image
    tasks = [
        (split, seed, start, min(start + chunk, num_samples), words, difficulty, random_fraction, charset, faces)
        for start in range(0, num_samples, chunk)
    ]
    if num_workers <= 1:
        for task in tasks:
            yield from _render_chunk(task)
        return
    with ProcessPoolExecutor(num_workers) as pool:
        for results in pool.map(_render_chunk, tasks):
            yield from results


# The evaluation sets of a font-disjoint benchmark: test/<name>, (font split, level).
FONT_DISJOINT_TESTS = {
    "unseen_fonts_clean": ("test", "dark_on_light"),
    "unseen_fonts_textured": ("test", "textured"),
    "seen_fonts_clean": ("train", "dark_on_light"),
}
FONT_DISJOINT_VAL = ("val", "unseen_fonts", "dark_on_light")
FONTS_FILE = "fonts.json"  # which families each split was drawn in


def build_synthetic_benchmark(
    output_root: str | os.PathLike,
    num_train: int = 20000,
    num_val: int = 1000,
    num_test: int = 1000,
    seed: int = 0,
    difficulty: str = "easy",
    name: str = "synth",
    charset: str | None = CHARSET_94,
    wordlist: str | os.PathLike = WORDLIST_PATH,
    held_out_fraction: float = 0.2,
    num_workers: int | None = None,
    overwrite: bool = False,
    random_fraction: float = 0.0,
    fonts: str = "classic",
) -> dict[str, Path]:
    """Write `output_root/{train,val,test}/<name>/data.mdb`. Val and test words are held out of train;
    `random_fraction` of the training images show random alphanumeric strings (val and test: words only).
    `charset` limits the words (only those made of its characters are used), the random strings (its letters and
    digits; a-z0-9 for an ASCII charset) and the case changes. Returns the LMDB folder of each split (splits with
    0 samples are not written).

    `fonts="disjoint"`: every installed text face (processing.fonts), each design family in one split only.
    train/<name> is drawn at `difficulty` in the train families; val/unseen_fonts in the val families; test/ holds
    `num_test` images of each of `FONT_DISJOINT_TESTS`: clean words in the test families (the headline), the hardest
    level in the test families, and clean words in the training families (held-out words, seen fonts).
    `output_root/fonts.json` lists the families of each split. `fonts="classic"`: the level's bundled fonts."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    if fonts not in ("classic", "disjoint"):
        raise ValueError(f"fonts must be 'classic' or 'disjoint', got {fonts!r}")
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    train_words, held_out_words = split_vocabulary(load_wordlist(wordlist, charset), held_out_fraction, seed)
    # (split folder, LMDB name, sample count, words, level, font split or None, random fraction)
    plan: list[tuple[str, str, int, list[str], str, str | None, float]]
    font_split, faces = None, []
    if fonts == "classic":
        plan = [("train", name, num_train, train_words, difficulty, None, random_fraction),
                ("val", name, num_val, held_out_words, difficulty, None, 0.0),
                ("test", name, num_test, held_out_words, difficulty, None, 0.0)]
    else:
        faces = discover_fonts(charset)
        font_split = split_font_families(faces, seed)
        val_split, val_name, val_level = FONT_DISJOINT_VAL
        plan = [("train", name, num_train, train_words, difficulty, "train", random_fraction),
                ("val", val_name, num_val, held_out_words, val_level, val_split, 0.0)]
        plan += [("test", test_name, num_test, held_out_words, level, split, 0.0)
                 for test_name, (split, level) in FONT_DISJOINT_TESTS.items()]
    plan = [row for row in plan if row[2] > 0]
    folders = [Path(output_root) / row[0] / row[1] for row in plan]
    existing = [str(folder) for folder in folders if folder.exists()]
    if existing and not overwrite:  # checked up front so a refused build writes nothing
        raise FileExistsError(f"{existing} already exist; pass overwrite=True to replace them")
    if font_split is not None:
        _write_font_split(Path(output_root), font_split, faces)
    written = {}
    for (split, lmdb_name, count, words, level, faces_split, fraction), folder in zip(plan, folders):
        split_faces = font_split.faces(faces, faces_split) if font_split is not None else None
        # each disjoint test set is seeded by its name: the sets draw different words, not the same ones restyled
        stream = f"test-{lmdb_name}" if fonts == "disjoint" and split == "test" else split
        samples = render_split(stream, count, words, seed, level, num_workers, random_fraction=fraction,
                               charset=charset, faces=split_faces)
        write_str_lmdb(folder, samples, overwrite=overwrite)
        written[split if fonts == "classic" else f"{split}/{lmdb_name}"] = folder
    return written


def _write_font_split(root: Path, split: FontSplit, faces: Sequence[FontFace]) -> None:
    """fonts.json: the families (and their files) of each split, written whole or not at all."""
    import json

    record = {name: {family: sorted(Path(f.path).name for f in faces if f.family == family)
                     for family in split.families(name)} for name in ("train", "val", "test")}
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{FONTS_FILE}.tmp"
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, root / FONTS_FILE)


def contact_sheet(images: list[Image.Image], columns: int = 6, cell: tuple[int, int] = (160, 48)) -> Image.Image:
    """Tile images (each fitted into `cell`, aspect kept) for a quick look at what the renderer makes."""
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * cell[0], rows * cell[1]), (255, 255, 255))
    for i, image in enumerate(images):
        scale = min((cell[0] - 4) / image.width, (cell[1] - 4) / image.height)
        thumb = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        sheet.paste(thumb, ((i % columns) * cell[0] + 2, (i // columns) * cell[1] + 2))
    return sheet


def main(argv: list[str] | None = None) -> None:
    """`python -m processing.synthetic OUTPUT_ROOT [--num-train N ...]`: write the benchmark."""
    import argparse
    import logging
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("output_root")
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-val", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", choices=sorted(DIFFICULTIES), default="easy")
    parser.add_argument("--charset", default=None,
                        help="characters (or a file of one character per line) the words and labels are limited to; "
                             "default: the 94 printable ASCII characters")
    parser.add_argument("--wordlist", default=str(WORDLIST_PATH), help="UTF-8 word list, one word per line")
    parser.add_argument("--random-fraction", type=float, default=0.0,
                        help="share of training images showing random alphanumeric strings instead of words")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--contact-sheet", help="also save 48 training samples tiled into this PNG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .charsets import read_charset

    charset = read_charset(args.charset) if args.charset is not None else CHARSET_94
    start = time.perf_counter()
    paths = build_synthetic_benchmark(
        args.output_root,
        num_train=args.num_train,
        num_val=args.num_val,
        num_test=args.num_test,
        seed=args.seed,
        difficulty=args.difficulty,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
        random_fraction=args.random_fraction,
        charset=charset,
        wordlist=args.wordlist,
    )
    total = args.num_train + args.num_val + args.num_test
    elapsed = time.perf_counter() - start
    print(
        f"wrote {total} images in {elapsed:.1f} s ({total / elapsed:.0f} images/s): {sorted(map(str, paths.values()))}"
    )
    if args.contact_sheet:
        words, _ = split_vocabulary(load_wordlist(args.wordlist, charset), 0.2, args.seed)
        samples = [
            _render_sample("train", args.seed, i, words, args.difficulty, args.random_fraction, charset)
            for i in range(48)
        ]
        contact_sheet([Image.open(io.BytesIO(data)) for data, _ in samples]).save(args.contact_sheet)


if __name__ == "__main__":
    main()
