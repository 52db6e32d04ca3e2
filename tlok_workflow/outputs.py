"""Reading inputs and writing outputs: images with their infotext (infotext.py) and recipe chunks, contact sheets.

Writes never overwrite and are atomic: a PNG is written to a temporary file in the target folder and then
hard-linked to a free name, so a file either appears complete under its name or not at all.
"""
import os
import re
import struct
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont, ImageOps, PngImagePlugin

from . import infotext
from .errors import UserError

INFOTEXT_CHUNK = infotext.CHUNK   # ui.py's name for it, until the panel reads infotext.CHUNK
RECIPE_CHUNK = "tlok_recipe"    # the whole recipe as JSON, for `run --recipe IMAGE`
KEY_CHUNK = "tlok_stage_key"    # the digest of everything that made the image (reuse.py)
MAX_PIXELS = 64 * 1024 * 1024   # larger inputs are refused rather than risking memory
MAX_TEXT_CHUNK = 8 * 1024 * 1024   # bytes of one PNG text chunk, read or inflated; a recipe is a few KB
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(UserError):
    """An input image cannot be used; the message names the file."""


class OutputFolderError(UserError):
    """No file can be saved in the output folder; the message names it and says why."""


def save_png(folder: Path, stem: str, image: Image.Image, info: str = "", recipe_json: str = "",
             stage_key: str = "") -> Path:
    """Save under `stem`.png, or `stem`-1.png, … if taken; never overwrites; returns the path written."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _written_temp(folder, _png_writer(image, info, recipe_json, stage_key))
    try:
        return _link_to_free_name(tmp, folder, stem)
    finally:
        os.unlink(tmp)


def save_png_as(path: Path, image: Image.Image, info: str = "", recipe_json: str = "") -> None:
    """Save under exactly `path`, atomically; FileExistsError if it is taken (nothing is overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _written_temp(path.parent, _png_writer(image, info, recipe_json))
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def free_name(folder: Path, stem: str, suffix: str = ".png") -> Path:
    """The first of `stem`.png, `stem`-1.png, … (or with another suffix) that is not taken."""
    for path in _names(folder, stem, suffix):
        if not os.path.lexists(path):
            return path
    raise FileExistsError(f"{folder}: no free file name for {stem}")


def _names(folder: Path, stem: str, suffix: str = ".png"):
    yield folder / f"{stem}{suffix}"
    yield from (folder / f"{stem}-{n}{suffix}" for n in range(1, 100000))


def _png_writer(image: Image.Image, info: str, recipe_json: str, stage_key: str = ""):
    png = PngImagePlugin.PngInfo()
    if info:
        png.add_text(infotext.CHUNK, printable(info))
    if recipe_json:
        png.add_text(RECIPE_CHUNK, printable(recipe_json))
    if stage_key:
        png.add_text(KEY_CHUNK, stage_key)
    # level 1: photos encode ~4.7x faster than PIL's default 6 (1536²: 0.14 s vs 0.65 s) for ~17 % more bytes
    return lambda f: image.save(f, format="PNG", pnginfo=png, compress_level=1)


def printable(text: str) -> str:
    """Text safe to print and to write as UTF-8 (PNG text, summaries): the bytes of a file name that is not
    UTF-8, which Python keeps as lone surrogates, become \\xNN escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def first_line(error: BaseException) -> str:
    """An error's first line for a one-line message (its type's name when it has no text)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _link_to_free_name(tmp: Path, folder: Path, stem: str) -> Path:
    for path in _names(folder, stem):
        try:
            os.link(tmp, path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free file name for {stem}")


def replace_text(path: Path, text: str) -> None:
    """Write a text file atomically, replacing it (summaries describe the latest run)."""
    os.replace(_written_temp(path.parent, lambda f: f.write(text.encode("utf-8"))), path)


def write_new_text(path: Path, text: str) -> None:
    """Write a text file atomically; an existing file is kept as it is."""
    tmp = _written_temp(path.parent, lambda f: f.write(text.encode("utf-8")))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _current_umask() -> int:
    """The process umask. os.umask can only read it by setting it, which would race with other threads
    creating files; Linux shows it in /proc, so the set-and-restore runs only where that is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# read once, at import: the mode every file we write gets (mkstemp alone would make them all 0600)
FILE_MODE = 0o666 & ~_current_umask()
TEMP_PREFIX, TEMP_SUFFIX = ".tlok-", ".tmp"


def _written_temp(folder: Path, write) -> Path:
    """A temporary file in `folder` (same file system, so it can be linked or moved into place) holding what
    write(binary file) wrote, flushed to disk; the caller links or moves it, then removes it. An OSError
    without a file name (a full disk, say) gets the folder's."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(folder)
        raise
    return Path(tmp)


def check_output_folder(folder: Path, of: str = "a run") -> None:
    """Fail now, naming the folder, if no image could be saved in `folder` (the output of `of`): it is a file, it
    cannot be made, or it cannot be written (read-only, no permission). Nothing is left behind: a temporary file is
    written and removed in the folder, or, while the folder does not exist yet, in the nearest one above it, where
    the first save would make it."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
    if existing == folder and not folder.is_dir():
        raise OutputFolderError(f"{folder}: not a folder; the output of {of} is a folder")
    if not existing.is_dir():
        raise OutputFolderError(f"{folder}: cannot be made, {existing} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=existing)
    except OSError as e:
        why = e.strerror or str(e)
        raise OutputFolderError(f"{folder}: cannot be written ({why})" if existing == folder else
                                f"{folder}: cannot be made in {existing} ({why})") from None
    os.close(fd)
    os.unlink(probe)


def read_png_text(path: Path) -> Dict[str, str]:
    """A PNG's text chunks (tEXt, zTXt, iTXt), also those after the image data, which PIL's Image.info leaves
    out. Reads no pixels. A file that is not a PNG, or is truncated or damaged, is an ImageError naming it."""
    path = Path(path)
    texts: Dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                raise ImageError(f"{path}: not a PNG file")
            while True:
                head = f.read(8)
                if len(head) < 8:
                    raise ImageError(f"{path}: truncated PNG (it ends before its IEND chunk)")
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IEND":
                    return texts
                if kind not in (b"tEXt", b"zTXt", b"iTXt"):
                    f.seek(length + 4, os.SEEK_CUR)
                    continue
                if length > MAX_TEXT_CHUNK:
                    raise ImageError(f"{path}: a {kind.decode()} chunk of {length} bytes, over the "
                                     f"{MAX_TEXT_CHUNK} byte limit")
                body, crc = f.read(length), f.read(4)
                if len(crc) < 4:
                    raise ImageError(f"{path}: truncated PNG (it ends inside a {kind.decode()} chunk)")
                if zlib.crc32(kind + body) != int.from_bytes(crc, "big"):
                    raise ImageError(f"{path}: damaged PNG (a {kind.decode()} chunk fails its checksum)")
                key, text = _text_chunk(kind, body)
                texts[key] = text
    except (zlib.error, UnicodeDecodeError, _TooLarge) as e:
        raise ImageError(f"{path}: damaged PNG text chunk ({e})") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e})") from None


class _TooLarge(ValueError):
    pass


def _text_chunk(kind: bytes, body: bytes) -> Tuple[str, str]:
    """(key, text) of a tEXt, zTXt or iTXt chunk body (PNG spec, section 11.3.4)."""
    key, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":   # compression method byte, then zlib data
        return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    compressed, rest = rest[:1] == b"\1", rest[2:]   # iTXt: compression flag and method,
    _, _, rest = rest.partition(b"\0")                # language tag,
    _, _, text = rest.partition(b"\0")                # translated key, text
    return key.decode("latin-1"), (_inflate(text) if compressed else text).decode("utf-8")


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, MAX_TEXT_CHUNK)
    if inflater.unconsumed_tail:
        raise _TooLarge(f"over {MAX_TEXT_CHUNK} bytes uncompressed")
    return text


def load_image(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An input image as RGB, EXIF orientation applied; clear errors for unusable files."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ImageError(f"{path}: not found")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file")
        with warnings.catch_warnings():   # PIL warns of sizes past its bomb limit: ours is lower, see below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.width * im.height > max_pixels:
                raise ImageError(f"{path}: {im.width}x{im.height} is over the {max_pixels} pixel limit")
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:   # PIL refuses sizes past twice its limit before we see them
        raise ImageError(f"{path}: over the {max_pixels} pixel limit ({e})") from None
    except Exception as e:  # PIL raises many types for broken files; the OS for unreadable ones or long names
        raise ImageError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGBA/LA/P/CMYK/16-bit → RGB; transparency becomes white, as a photo viewer shows it."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 257).convert("L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, "white")
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def next_run_number(folder: Path) -> int:
    """One more than the highest 'NNNNN-' file prefix in the folder, like the WebUI's image numbers."""
    numbers = [int(m.group(1)) for p in folder.glob("*") if (m := re.match(r"(\d{5})-", p.name))] \
        if folder.is_dir() else []
    return max(numbers, default=-1) + 1


def fit_size(image_size: Tuple[int, int], width: int, height: int, step: int = 8) -> Tuple[int, int]:
    """The stage size for an input: as given when the aspect matches, else the input's aspect with the
    stage's long side (multiples of `step`, the host's size step), so non-square photos are not squashed."""
    iw, ih = image_size
    if iw * height == ih * width:
        return width, height
    long_side = max(width, height)
    scale = long_side / max(iw, ih)
    return max(step, round(iw * scale / step) * step), max(step, round(ih * scale / step) * step)


def contact_sheet(images: Sequence[Tuple[Image.Image, str]], title: str = "", height: int = 320) -> Image.Image:
    """All stages of one item side by side at one height, each labelled underneath, the title above."""
    font = _sheet_font()
    band = 22
    tiles = [im.resize((max(1, round(im.width * height / im.height)), height),
                       Image.NEAREST if im.height < height else Image.LANCZOS) for im, _ in images]
    top = band if title else 0
    width = max(sum(t.width for t in tiles) + 8 * (len(tiles) + 1), text_width(title, font) + 16)
    sheet = Image.new("RGB", (width, top + height + band + 8), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw_words(draw, (8, 4), title, font)
    x = 8
    for tile, (_, label) in zip(tiles, images):
        sheet.paste(tile, (x, top + 4))
        draw_words(draw, (x, top + height + 7), label, font)
        x += tile.width + 8
    return sheet


def label_font(size: int):
    """A legible scalable font of `size` pixels: DejaVu Sans (Pillow looks in the system's font folders), else
    Pillow's own scalable default (10.1+), else its small bitmap font (Pillow 9.5 without DejaVu)."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def text_lines(text: str, font, width: int) -> list:
    """`text` broken into lines at most `width` pixels wide (a word wider than that keeps a line of its own)."""
    lines: list = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _sheet_font():
    try:
        return ImageFont.load_default(size=14)   # Pillow 10.1+: a scalable font
    except TypeError:                            # Pillow 9.5 (the WebUI's): the fixed bitmap font
        return ImageFont.load_default()


def _word_gap(font) -> int:
    """The space between words: the default scalable font's own space is 3 px at 14 px, too narrow to read
    ("DEMO OUTPUT" came out as "DEMOOUTPUT"), so words are set half an em apart."""
    return max(6, round(getattr(font, "size", 12) / 2))


def text_width(text: str, font) -> int:
    words = text.split(" ")
    return round(sum(font.getlength(word) for word in words) + _word_gap(font) * (len(words) - 1))


def draw_words(draw: ImageDraw.ImageDraw, at: Tuple[int, int], text: str, font) -> None:
    """Text with a readable gap at every space (two spaces: twice the gap)."""
    x, y = at
    for word in text.split(" "):
        draw.text((x, y), word, fill="black", font=font)
        x += font.getlength(word) + _word_gap(font)


def save_start_image(out_dir, image) -> Path:
    """A start image (upload or API) saved under out_dir/inputs, so the recipe can name it and a rerun read it."""
    if isinstance(image, (str, Path)):
        return Path(image)
    if not isinstance(image, Image.Image):
        raise ImageError("start image: not an image")
    folder = Path(out_dir) / "inputs"
    check_output_folder(folder, "an upload")
    return save_png(folder, f"{next_run_number(folder):05d}-start", image.convert("RGB"))


def recipe_json_from_png(path: Path) -> Optional[str]:
    return read_png_text(path).get(RECIPE_CHUNK)
