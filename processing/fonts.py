"""The renderer's fonts: every installed text face, grouped by design family, and font-disjoint train/val/test splits.

A model that only ever saw three DejaVu faces reads those faces and little else; a test drawn in the same faces
cannot tell. So faces are grouped by *design* (DejaVu Sans and its ancestor Bitstream Vera Sans are one design;
bold and italic are styles of their family), and every design family belongs to exactly one split
(`split_font_families`): accuracy on the test split's families is accuracy on fonts the model never saw.

Where the faces come from, all installed with the project, none downloaded at run time:
- matplotlib's bundled TrueType fonts (DejaVu Sans/Serif/Mono, STIX, Computer Modern);
- reportlab's bundled Type 1 faces (URW clones of Helvetica, Times and Courier, Adobe's multiple-master Sans and
  Serif, two calligraphic faces);
- the "Python Fonts" packages on the package index (`font-source-sans-pro`, `font-caladea`, ...), found through
  their `fonts_ttf` / `fonts_otf` entry points without importing them.

Deliberately absent: the families trdg bundles (Roboto, Open Sans, Lato, Raleway, Amatic, Droid Sans, Pacifico,
Aller, Bebas, Caviar Dreams, ...). Other generators' data made with them is how generalisation is measured, so they
must never be training fonts (`EXCLUDED_FAMILIES` refuses them even when a user's folder holds them).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONT_SUFFIXES = (".ttf", ".otf", ".pfb")

# Face family name (as FreeType reports it) -> design family. Faces not listed are their own design family.
DESIGN_FAMILIES = {
    "Bitstream Vera Sans": "DejaVu Sans",
    "Bitstream Vera Sans Mono": "DejaVu Sans",
    "DejaVu Sans Mono": "DejaVu Sans",  # Vera Sans Mono's letterforms are Vera Sans's
    "Bitstream Vera Serif": "DejaVu Serif",
    "STIXGeneral": "STIX",
    "cmr10": "Computer Modern Roman",
    "cmb10": "Computer Modern Roman",
    "cmti10": "Computer Modern Roman",
    "cmss10": "Computer Modern Sans",
    "cmtt10": "Computer Modern Typewriter",
    "Arial MT": "Nimbus Sans (Helvetica clone)",
    "Times New Roman PS": "Nimbus Roman (Times clone)",
    "Courier": "Nimbus Mono (Courier clone)",
}

# Design family -> category; families are split per category, so every split sees sans, serif, mono and display.
CATEGORIES = {
    "DejaVu Sans": "sans", "Computer Modern Sans": "sans", "Nimbus Sans (Helvetica clone)": "sans",
    "Hanken Grotesk": "sans", "Manrope": "sans", "Red Hat Display": "sans",
    "Source Sans Pro": "sans", "Fjalla One": "sans",
    "DejaVu Serif": "serif", "STIX": "serif", "Computer Modern Roman": "serif", "Nimbus Roman (Times clone)": "serif",
    "Caladea": "serif", "Source Serif Pro": "serif",
    "Computer Modern Typewriter": "mono", "Nimbus Mono (Courier clone)": "mono",
    "Fredoka One": "display", "Dark Garden": "display", "CALLIG15": "display", "Intuitive": "display",
}
TEXT_CATEGORIES = ("sans", "serif", "mono")  # what "clean" words are set in; display faces are for harder levels

# Faces that are not text: symbol and math fonts, size variants, the missing-glyph font; and multiple-master
# faces, which FreeType cannot set without choosing an instance (every advance is 0).
NOT_TEXT = {"Symbol", "ITC Zapf Dingbats", "STIXNonUnicode", "cmex10", "cmmi10", "cmsy10", "Last Resort High-Efficiency",
            "DejaVu Sans Display", "DejaVu Serif Display", "HarfBuzz test", "Adobe Sans MM", "Adobe Serif MM"}
NOT_TEXT_PREFIXES = ("STIXSize",)

# trdg's bundled Latin families: kept out of our training data (see the module docstring).
EXCLUDED_FAMILIES = {"Roboto", "Roboto Condensed", "Open Sans", "Lato", "Raleway", "Amatic", "Amatic SC",
                     "Droid Sans", "Pacifico", "Aller", "Aller Display", "Bebas", "Bebas Neue", "Capture it",
                     "Caviar Dreams", "FFF Tusj", "Sansation", "Seaside Resort NF", "Walkway", "Walkway Bold"}

# Computer Modern maps code points to TeX (OT1) slots: letters and digits are right, most punctuation is another
# glyph, so those faces only draw letters and digits.
TEX_DESIGNS = {"Computer Modern Roman", "Computer Modern Sans", "Computer Modern Typewriter"}
ALPHANUMERIC = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, order=True)
class FontFace:
    """One font file: its design family (the unit of the splits), category and style."""

    family: str
    style: str
    path: str
    category: str
    face_family: str = ""  # the family name in the file (e.g. "cmb10" of design "Computer Modern Roman")

    @property
    def name(self) -> str:
        return f"{self.family} {self.style} ({Path(self.path).name})"


def matplotlib_font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # locates the package without importing it
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def font_package_files() -> list[Path]:
    """Font files of the installed "Python Fonts" packages (distributions with `fonts_ttf`/`fonts_otf` entry
    points), read from their file lists, never by importing them."""
    files = []
    for dist in importlib.metadata.distributions():
        groups = {entry.group for entry in dist.entry_points}
        if not groups & {"fonts_ttf", "fonts_otf"}:
            continue
        for file in dist.files or ():
            if file.suffix.lower() in FONT_SUFFIXES:
                files.append(Path(dist.locate_file(file)))
    return files


def bundled_font_files() -> list[Path]:
    """Every font file shipped by the project's dependencies (matplotlib, reportlab, the font packages)."""
    files = sorted(matplotlib_font_dir().glob("*.ttf"))
    reportlab = _package_dir("reportlab")
    if reportlab is not None:
        files += sorted((reportlab / "fonts").glob("*.pfb")) + sorted((reportlab / "fonts").glob("*.ttf"))
    return files + sorted(font_package_files())


@lru_cache(maxsize=1024)
def face_characters(path: str) -> frozenset[str]:
    """The characters a font file draws: its Unicode character map (Computer Modern: letters and digits only)."""
    from matplotlib.ft2font import FT2Font

    mapped = frozenset(chr(code) for code in FT2Font(path).get_charmap())
    family, _ = ImageFont.truetype(path, 12).getname()
    return mapped & ALPHANUMERIC if DESIGN_FAMILIES.get(family) in TEX_DESIGNS else mapped


def describe_face(path: str | Path) -> FontFace | None:
    """The FontFace of a font file, or None for a face that is not text (symbols, math, size variants)."""
    path = str(path)
    family, style = ImageFont.truetype(path, 12).getname()
    family = family or Path(path).stem
    if family in NOT_TEXT or family.startswith(NOT_TEXT_PREFIXES) or "Variable" in Path(path).name:
        return None
    design = DESIGN_FAMILIES.get(family, family)
    if design in EXCLUDED_FAMILIES or family in EXCLUDED_FAMILIES:
        raise ValueError(f"{path}: {family!r} (design {design!r}) is one of trdg's bundled families, which are kept out of training data "
                         "(they measure generalisation); remove it from the font folder")
    return FontFace(design, style or "Regular", path, CATEGORIES.get(design, "other"), family)


def discover_fonts(charset: str | None = None, extra: Iterable[str | Path] = ()) -> list[FontFace]:
    """The text faces that can draw `charset`'s letters and digits (None: the ASCII ones), one per (face family, style):
    a face shipped as both .otf and .ttf counts once. `extra`: more font files or folders of them."""
    paths = bundled_font_files()
    for item in extra:
        item = Path(item)
        paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in FONT_SUFFIXES) if item.is_dir() else [item]
    needed = ALPHANUMERIC if charset is None else frozenset(c for c in charset if c.isalnum())
    faces: dict[tuple[str, str], FontFace] = {}
    for path in paths:
        face = describe_face(path)
        if face is None:
            continue
        if ImageFont.truetype(face.path, 12).getlength("ab") <= 0:  # a face that cannot set a line
            continue
        drawn = face_characters(face.path)
        # Computer Modern draws no accents or other scripts: it serves only the ASCII letters and digits
        if not (needed & ALPHANUMERIC if face.family in TEX_DESIGNS else needed) <= drawn:
            continue
        key = (face.face_family, face.style)
        if key not in faces or (path.suffix.lower() == ".ttf" and faces[key].path.endswith(".otf")):
            faces[key] = face
    return sorted(faces.values())


@dataclass(frozen=True)
class FontSplit:
    """Design families per split; no family is in two splits."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def families(self, split: str) -> tuple[str, ...]:
        return getattr(self, split)

    def faces(self, faces: Sequence[FontFace], split: str, categories: Sequence[str] | None = None) -> list[FontFace]:
        chosen = set(self.families(split))
        return [f for f in faces if f.family in chosen and (categories is None or f.category in categories)]


def split_font_families(faces: Sequence[FontFace], seed: int = 0, test_fraction: float = 0.25,
                        val_fraction: float = 0.15) -> FontSplit:
    """Assign each design family to train, val or test, per category (so each split has sans, serif, ...), by a
    seeded shuffle of the sorted family names: the same fonts and seed give the same split on any machine.
    A category with one family keeps it for training; test takes at least one family of every other category, val
    one where at least three remain for training."""
    by_category: dict[str, list[str]] = {}
    for family, category in sorted({(f.family, f.category) for f in faces}):
        by_category.setdefault(category, []).append(family)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for category, families in sorted(by_category.items()):
        random.Random(f"fonts-{seed}-{category}").shuffle(families)
        count = len(families)
        num_test = 0 if count < 2 else max(1, round(test_fraction * count))
        num_val = round(val_fraction * count) if count - num_test >= 3 else 0
        num_val = max(num_val, 1) if val_fraction > 0 and count - num_test >= 4 else num_val
        splits["test"] += families[:num_test]
        splits["val"] += families[num_test:num_test + num_val]
        splits["train"] += families[num_test + num_val:]
    return FontSplit(*(tuple(sorted(splits[name])) for name in ("train", "val", "test")))


def main(argv: list[str] | None = None) -> None:
    """`python -m processing.fonts [--seed N]`: list the faces found and the font-disjoint split."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faces = discover_fonts()
    split = split_font_families(faces, args.seed)
    for name in ("train", "val", "test"):
        print(f"{name}:")
        for family in split.families(name):
            styles = [f.style for f in faces if f.family == family]
            category = next(f.category for f in faces if f.family == family)
            print(f"  {family} [{category}]: {len(styles)} faces ({', '.join(styles)})")


if __name__ == "__main__":
    main()
