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
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .augmentation import perspective_coefficients
from .charsets import CHARSET_94, evaluation_charset, is_ascii_charset
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
_TEX_SAFE = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


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
    fonts: tuple[str, ...] | None = None  # None: every bundled font


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
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@lru_cache(maxsize=512)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / name), size)


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
    from matplotlib.ft2font import FT2Font

    mapped = frozenset(chr(code) for code in FT2Font(str(font_dir() / name)).get_charmap())
    return mapped & _TEX_SAFE if name in TEX_FONTS else mapped


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


def render_word(word: str, rng: random.Random, difficulty: str = "easy") -> Image.Image:
    """Render `word` as an RGB image; every random choice comes from `rng` (same state -> same bytes)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    if not word:
        raise ValueError("cannot render an empty word")
    level = DIFFICULTIES[difficulty]
    font = _font(_pick_font(word, rng, level), rng.randint(*level.font_size))
    text_color, background_color = _colors(rng, level.min_contrast)

    left, top, right, bottom = font.getbbox(word)
    pad_x = int(rng.uniform(0.1, 0.5) * font.size) + 1
    pad_y = int(rng.uniform(0.1, 0.35) * font.size) + 1
    size = (right - left + 2 * pad_x, bottom - top + 2 * pad_y)
    image = _background(rng, size, background_color)
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), word, font=font, fill=text_color)

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


def _render_sample(
    split: str, seed: int, index: int, words: list[str], difficulty: str, random_fraction: float = 0.0,
    charset: str | None = None,
) -> tuple[bytes, str]:
    """Render sample `index` of a split: its own seeded RNG picks the word, so workers need no shared state. Labels
    stay inside `charset` (None: no limit)."""
    rng = random.Random(f"{seed}-{split}-{index}")
    allowed = frozenset(charset) if charset is not None else None
    if random_fraction > 0 and rng.random() < random_fraction:
        word = random_string(rng, characters=random_characters(charset), allowed=allowed)
    else:
        word = vary_case(rng.choice(words), rng, DIFFICULTIES[difficulty].case_p, allowed)
    buffer = io.BytesIO()
    render_word(word, rng, difficulty).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), word


def _render_chunk(args: tuple[str, int, int, int, list[str], str, float, str | None]) -> list[tuple[bytes, str]]:
    split, seed, start, stop, words, difficulty, random_fraction, charset = args
    return [_render_sample(split, seed, index, words, difficulty, random_fraction, charset)
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
) -> Iterator[tuple[bytes, str]]:
    """Yield `(png_bytes, label)` for one split, in index order whatever the number of workers; random strings and
    case changes stay inside `charset` (None: a-z0-9 random strings, any case change)."""
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random_fraction must be in [0, 1], got {random_fraction}")
    chunk = 256  # the word list travels once per chunk, not once per image
    tasks = [
        (split, seed, start, min(start + chunk, num_samples), words, difficulty, random_fraction, charset)
        for start in range(0, num_samples, chunk)
    ]
    if num_workers <= 1:
        for task in tasks:
            yield from _render_chunk(task)
        return
    with ProcessPoolExecutor(num_workers) as pool:
        for results in pool.map(_render_chunk, tasks):
            yield from results


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
) -> dict[str, Path]:
    """Write `output_root/{train,val,test}/<name>/data.mdb`. Val and test words are held out of train;
    `random_fraction` of the training images show random alphanumeric strings (val and test: words only).
    `charset` limits the words (only those made of its characters are used), the random strings (its letters and
    digits; a-z0-9 for an ASCII charset) and the case changes. Returns the LMDB folder of each split (splits with
    0 samples are not written)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    train_words, held_out_words = split_vocabulary(load_wordlist(wordlist, charset), held_out_fraction, seed)
    plan = {"train": (num_train, train_words), "val": (num_val, held_out_words), "test": (num_test, held_out_words)}
    folders = {split: Path(output_root) / split / name for split, (count, _) in plan.items() if count > 0}
    existing = [str(folder) for folder in folders.values() if folder.exists()]
    if existing and not overwrite:  # checked up front so a refused build writes nothing
        raise FileExistsError(f"{existing} already exist; pass overwrite=True to replace them")
    written = {}
    for split, folder in folders.items():
        count, words = plan[split]
        fraction = random_fraction if split == "train" else 0.0
        samples = render_split(split, count, words, seed, difficulty, num_workers, random_fraction=fraction,
                               charset=charset)
        write_str_lmdb(folder, samples, overwrite=overwrite)
        written[split] = folder
    return written


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
