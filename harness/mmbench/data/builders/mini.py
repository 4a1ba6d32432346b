"""``mbeir-mini``: a small, real M-BEIR-format dataset built from Debian's Tux Paint stamps.

The stamps package (``tuxpaint-stamps-default``, GPL-2) ships real images (many are photographs cut out
on a transparent background) with a human-written English caption and translations into ~65
languages. We do not commit the images; :func:`build_mini` writes the dataset on the user's machine,
deterministically (same input files + same Pillow/libjpeg -> byte-identical output), in exactly
M-BEIR's on-disk layout and record formats, so the ordinary M-BEIR loader reads it.

Dataset name ``TuxPaint``, dataset id 10 (M-BEIR uses 0-9). Four test tasks::

    task0  text  -> image   English caption            -> the stamp images with that caption
    task1  text  -> text    caption in de/fr/es/...    -> the English caption (cross-lingual)
    task3  image -> text    stamp image                -> its English caption
    task4  image -> image   flipped/cropped/re-toned copy -> the original image

Layout under the output folder (paths in records are relative to it)::

    query/test/mbeir_tuxpaint_task{0,1,3,4}_test.jsonl
    cand_pool/local/mbeir_tuxpaint_task{0,1,3,4}_cand_pool.jsonl
    cand_pool/global/mbeir_union_test_cand_pool.jsonl
    qrels/test/mbeir_tuxpaint_task{0,1,3,4}_test_qrels.txt
    instructions/query_instructions.tsv
    mbeir_images/tuxpaint_images/<category path>/NAME.jpg
    mbeir_images/tuxpaint_images/transformed/<category path>/NAME.jpg
    MANIFEST.json

The build happens in a hidden temporary sibling folder that is renamed into place at the end, so an
interrupted build never leaves a half-written folder that looks valid.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmbench.data.types import format_string
from mmbench.errors import DataError, MmbenchError

DEFAULT_STAMPS_ROOT = Path("/usr/share/tuxpaint/stamps")
BUILDER_VERSION = "1"
DEFAULT_N_STAMPS = 300

SUITE_NAME = "mbeir-mini"
PACKAGE = "tuxpaint-stamps-default"
DATASET_NAME = "TuxPaint"
DATASET_ID = 10
FILE_STEM = "tuxpaint"
IMAGE_DIR = "mbeir_images/tuxpaint_images"
TRANSFORMED_SUBDIR = "transformed"
TASK_IDS = (0, 1, 3, 4)

# Image processing (fixed: no RNG anywhere).
SHORT_SIDE = 256
JPEG_QUALITY = 90
CROP_FRACTION = 0.85
BRIGHTNESS = 1.10
CONTRAST = 0.85
TRANSFORM = {
    "hflip": True,
    "center_crop": CROP_FRACTION,
    "brightness": BRIGHTNESS,
    "contrast": CONTRAST,
}

# task1: the query language rotates through this list by stamp position; a stamp without the
# language falls back to the next one in the list.
CROSS_LINGUAL_LANGS = ("de", "fr", "es", "it", "pt", "nl", "pl", "sv")

# Images: below this many, converting in-process beats starting worker processes.
_PARALLEL_MIN_IMAGES = 48

INSTRUCTIONS: dict[tuple[str, str], tuple[str, str, str, str]] = {
    ("text", "image"): (
        "Find me a picture that matches the given caption.",
        "Identify the stamp image that shows what this caption describes.",
        "I want you to retrieve a picture of this short description.",
        "Show me the image that best fits the following caption.",
    ),
    ("text", "text"): (
        "Find the English caption that means the same as this text.",
        "Retrieve the English version of the following caption.",
        "I want to find the English description that matches this sentence in another language.",
        "You need to identify the English caption with the same meaning as the given one.",
    ),
    ("image", "text"): (
        "Find a caption describing the given picture.",
        "Retrieve the caption for the displayed stamp image.",
        "Can you find a short description of what is shown in this image?",
        "I want to locate the caption that best describes this picture.",
    ),
    ("image", "image"): (
        "Find the original picture that this edited image was made from.",
        "Which image is the source of this flipped and cropped copy?",
        "Retrieve the picture that is identical to the given one apart from small edits.",
        "You need to identify the original image that this modified copy comes from.",
    ),
}
_TASK_MODALITIES = {0: ("text", "image"), 1: ("text", "text"), 3: ("image", "text"), 4: ("image", "image")}

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stage is ``"scan"``, ``"images"`` or ``"write"``."""

_LANG_LINE = re.compile(r"^([A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@[A-Za-z]+)?)\.utf8=(.*)$")


# --------------------------------------------------------------------------------------------------
# Paths


def default_mini_root() -> Path:
    """``$MMBENCH_DATA/mbeir-mini``; default ``~/.cache/mmbench/data/mbeir-mini``
    (``$MMBENCH_HOME`` or ``$MMBENCH_CACHE`` replaces ``~/.cache/mmbench``: :func:`mmbench.config.data_home`)."""
    from mmbench.config import data_home

    return data_home() / SUITE_NAME


def query_file(task_id: int) -> str:
    return f"query/test/mbeir_{FILE_STEM}_task{task_id}_test.jsonl"


def pool_file(task_id: int) -> str:
    return f"cand_pool/local/mbeir_{FILE_STEM}_task{task_id}_cand_pool.jsonl"


def qrels_file(task_id: int) -> str:
    return f"qrels/test/mbeir_{FILE_STEM}_task{task_id}_test_qrels.txt"


GLOBAL_POOL_FILE = "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
INSTRUCTIONS_FILE = "instructions/query_instructions.tsv"
MANIFEST_FILE = "MANIFEST.json"


# --------------------------------------------------------------------------------------------------
# Reading the stamps


@dataclass
class Stamp:
    rel: str                          # "<category path>/NAME" (posix, no extension)
    png: Path
    caption: str                      # English caption, stripped, as written
    translations: dict[str, str] = field(default_factory=dict)   # lang -> stripped text


def parse_caption_file(text: str) -> tuple[str, dict[str, str]]:
    """Parse a Tux Paint ``NAME.txt``: line 1 is the English caption, then ``LANG.utf8=TEXT`` lines.

    Tolerates a BOM, ``\\r\\n``, blank lines, trailing spaces and ``=`` inside the English caption
    (``"A calculator.  6x7=42"``). The first value wins when a language repeats; empty values are
    dropped. Returns ``("", {...})`` when the first line is missing or is itself a language line.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    first = lines[0].strip() if lines else ""
    rest = lines[1:]
    if _LANG_LINE.match(first):
        first, rest = "", lines
    translations: dict[str, str] = {}
    for line in rest:
        m = _LANG_LINE.match(line.strip())
        if not m:
            continue
        lang, value = m.group(1), m.group(2).strip()
        if value and lang not in translations:
            translations[lang] = value
    return first, translations


def scan_stamps(stamps_root: Path) -> list[Stamp]:
    """All PNG stamps with a non-empty English caption, sorted by relative path.

    SVG-only stamps are skipped (no renderer needed); a PNG that also has an SVG is kept.
    """
    stamps_root = Path(stamps_root)
    if not stamps_root.is_dir():
        raise DataError(
            stamps_root,
            f"Tux Paint stamps not found. Install them with `sudo apt-get install {PACKAGE}` "
            "(Debian/Ubuntu), or pass the folder that holds them (stamps_root=...).",
        )
    found: list[tuple[str, Stamp]] = []
    for png in stamps_root.rglob("*.png"):
        if not png.is_file():
            continue
        txt = png.with_suffix(".txt")
        if not txt.is_file():
            continue
        caption, translations = parse_caption_file(txt.read_bytes().decode("utf-8", errors="replace"))
        if not caption:
            continue
        rel = png.relative_to(stamps_root).with_suffix("").as_posix()
        stamp = Stamp(rel=rel, png=png, caption=caption, translations=translations)
        found.append((png.relative_to(stamps_root).as_posix(), stamp))
    found.sort(key=lambda pair: pair[0])     # by the PNG's relative path, code-point order
    return [stamp for _, stamp in found]


def select_evenly(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (indices ``floor(i * len / n)``), order kept."""
    total = len(items)
    return [items[(i * total) // n] for i in range(n)]


def source_package_version(package: str = PACKAGE) -> str | None:
    """The installed Debian version of ``package`` (dpkg status, else the changelog), or None."""
    status = Path("/var/lib/dpkg/status")
    with contextlib.suppress(OSError):
        for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            fields_ = dict(
                line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" ")
            )
            if fields_.get("Package") == package and "installed" in fields_.get("Status", ""):
                return fields_.get("Version")
    for name in ("changelog.Debian.gz", "changelog.gz"):
        path = Path("/usr/share/doc") / package / name
        with contextlib.suppress(OSError, EOFError):
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
                m = re.match(r"^\S+ \(([^)]+)\)", fh.readline())
                if m:
                    return m.group(1)
    return None


# --------------------------------------------------------------------------------------------------
# Images (module-level so worker processes can import them)


def _resize_short_side(im, short: int = SHORT_SIDE):
    from PIL import Image

    w, h = im.size
    if w <= h:
        size = (short, max(1, round(h * short / w)))
    else:
        size = (max(1, round(w * short / h)), short)
    if size == im.size:
        return im.copy()
    return im.resize(size, Image.Resampling.LANCZOS)


def _jpeg_bytes(im) -> bytes:
    buf = io.BytesIO()
    # A fresh image carries no info/EXIF/ICC, so nothing time- or machine-dependent is written.
    im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buf.getvalue()


def _load_on_white(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        rgba = im.convert("RGBA")     # honours palette / colour-key transparency and LA
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _transformed(rgb):
    from PIL import ImageEnhance, ImageOps

    im = ImageOps.mirror(rgb)
    w, h = im.size
    cw, ch = max(1, round(w * CROP_FRACTION)), max(1, round(h * CROP_FRACTION))
    left, top = (w - cw) // 2, (h - ch) // 2
    im = im.crop((left, top, left + cw, top + ch))
    im = _resize_short_side(im)
    im = ImageEnhance.Brightness(im).enhance(BRIGHTNESS)
    return ImageEnhance.Contrast(im).enhance(CONTRAST)


def _convert_one(job: tuple[str, str, str]) -> tuple[tuple[str, int], tuple[str, int]]:
    """Write the original and transformed JPEGs; return ``((sha256, bytes), (sha256, bytes))``."""
    src, dst_orig, dst_trans = job
    try:
        rgb = _load_on_white(Path(src))
    except Exception as exc:  # PIL raises several types for corrupt files
        raise DataError(src, f"cannot decode stamp image ({type(exc).__name__}: {exc})") from None
    out = []
    for im, dst in ((_resize_short_side(rgb), dst_orig), (_transformed(rgb), dst_trans)):
        data = _jpeg_bytes(im)
        Path(dst).write_bytes(data)
        out.append((hashlib.sha256(data).hexdigest(), len(data)))
    return out[0], out[1]


def _convert_all(jobs: list[tuple[str, str, str]], workers: int, progress: Progress | None):
    total = len(jobs)
    if progress:
        progress("images", 0, total)
    if workers <= 1 or total < _PARALLEL_MIN_IMAGES:
        results = []
        for i, job in enumerate(jobs, 1):
            results.append(_convert_one(job))
            if progress:
                progress("images", i, total)
        return results
    import multiprocessing

    # "spawn": safe even when the caller already runs threads (torch, faiss). Each worker writes
    # its own files and imap keeps the result order, so the output does not depend on scheduling.
    ctx = multiprocessing.get_context("spawn")
    results = []
    with ctx.Pool(processes=workers) as pool:
        for i, res in enumerate(pool.imap(_convert_one, jobs, chunksize=8), 1):
            results.append(res)
            if progress and (i % 8 == 0 or i == total):
                progress("images", i, total)
    return results


# --------------------------------------------------------------------------------------------------
# Records


def _jsonl(records: list[dict]) -> bytes:
    # json.dumps defaults (ASCII escapes, ", " / ": " separators), as UniIR's preprocessors write.
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def _query(qid, txt, img, modality, src, pos, task_id) -> dict:
    return {
        "qid": qid,
        "query_txt": txt,
        "query_img_path": img,
        "query_modality": modality,
        "query_src_content": src,
        "pos_cand_list": pos,
        "neg_cand_list": [],
        "task_id": task_id,
    }


def _candidate(txt, img, modality, did, src) -> dict:
    return {"txt": txt, "img_path": img, "modality": modality, "did": did, "src_content": src}


def _did(n: int) -> str:
    return f"{DATASET_ID}:{n}"


def _same_text(a: str, b: str) -> bool:
    return format_string(a).casefold() == format_string(b).casefold()


def _build_records(stamps: list[Stamp]) -> tuple[dict[str, bytes], dict[str, dict]]:
    """All text files of the dataset (path -> bytes) and per-task counts."""
    m = len(stamps)
    img_path = [f"{IMAGE_DIR}/{s.rel}.jpg" for s in stamps]
    trans_path = [f"{IMAGE_DIR}/{TRANSFORMED_SUBDIR}/{s.rel}.jpg" for s in stamps]
    img_did = [_did(i + 1) for i in range(m)]

    # Distinct English captions (by their normalised candidate text), in order of first appearance.
    cap_index: dict[str, int] = {}
    cap_first: list[int] = []              # stamp index of the first stamp with the caption
    cap_stamps: list[list[int]] = []
    stamp_cap: list[int] = []
    for i, s in enumerate(stamps):
        key = format_string(s.caption)
        k = cap_index.get(key)
        if k is None:
            k = cap_index[key] = len(cap_first)
            cap_first.append(i)
            cap_stamps.append([])
        cap_stamps[k].append(i)
        stamp_cap.append(k)
    cap_did = [_did(m + k + 1) for k in range(len(cap_first))]

    def src(i: int, **extra) -> str:
        return json.dumps({"stamp": stamps[i].rel, **extra})

    image_pool = [_candidate(None, img_path[i], "image", img_did[i], src(i)) for i in range(m)]
    caption_pool = [
        _candidate(format_string(stamps[i].caption), None, "text", cap_did[k], src(i))
        for k, i in enumerate(cap_first)
    ]

    queries: dict[int, list[dict]] = {t: [] for t in TASK_IDS}
    # task0: caption -> every image with that caption
    for k, i in enumerate(cap_first):
        pos = [img_did[j] for j in cap_stamps[k]]
        queries[0].append(_query(None, stamps[i].caption, None, "text", src(i), pos, 0))
    # task1: translated caption -> English caption
    n_langs = len(CROSS_LINGUAL_LANGS)
    lang_counts: dict[str, int] = {}
    skipped_identical = skipped_missing = 0
    for i, s in enumerate(stamps):
        lang = next(
            (
                CROSS_LINGUAL_LANGS[(i + j) % n_langs]
                for j in range(n_langs)
                if CROSS_LINGUAL_LANGS[(i + j) % n_langs] in s.translations
            ),
            None,
        )
        if lang is None:
            skipped_missing += 1
            continue
        text = s.translations[lang]
        if _same_text(text, s.caption):
            skipped_identical += 1
            continue
        lang_counts[lang] = lang_counts.get(lang, 0) + 1
        queries[1].append(_query(None, text, None, "text", src(i, lang=lang), [cap_did[stamp_cap[i]]], 1))
    # task3: image -> its caption
    for i in range(m):
        queries[3].append(_query(None, None, img_path[i], "image", src(i), [cap_did[stamp_cap[i]]], 3))
    # task4: transformed image -> original image
    for i in range(m):
        queries[4].append(
            _query(None, None, trans_path[i], "image", src(i, transform="hflip+crop+tone"), [img_did[i]], 4)
        )

    files: dict[str, bytes] = {}
    counts: dict[str, dict] = {}
    image_pool_bytes, caption_pool_bytes = _jsonl(image_pool), _jsonl(caption_pool)
    for t in TASK_IDS:
        for n, q in enumerate(queries[t], 1):
            q["qid"] = _did(n)
        files[query_file(t)] = _jsonl(queries[t])
        files[pool_file(t)] = image_pool_bytes if _TASK_MODALITIES[t][1] == "image" else caption_pool_bytes
        qrel_lines = [f"{q['qid']} 0 {d} 1 {t}\n" for q in queries[t] for d in q["pos_cand_list"]]
        files[qrels_file(t)] = "".join(qrel_lines).encode("utf-8")
        counts[f"task{t}"] = {
            "query_modality": _TASK_MODALITIES[t][0],
            "cand_modality": _TASK_MODALITIES[t][1],
            "queries": len(queries[t]),
            "candidates": len(image_pool) if _TASK_MODALITIES[t][1] == "image" else len(caption_pool),
            "qrels": len(qrel_lines),
        }
    counts["task1"]["languages"] = dict(sorted(lang_counts.items()))
    counts["task1"]["skipped_identical"] = skipped_identical
    counts["task1"]["skipped_missing"] = skipped_missing
    # The global pool: the union of the distinct pools, sorted by (dataset id, n).
    union = sorted(image_pool + caption_pool, key=lambda c: tuple(int(x) for x in c["did"].split(":")))
    files[GLOBAL_POOL_FILE] = _jsonl(union)
    counts["union"] = {"candidates": len(union), "images": len(image_pool), "captions": len(caption_pool)}

    header = "query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\tprompt_2\tprompt_3\tprompt_4\n"
    rows = [
        "\t".join((qm, cm, DATASET_NAME, str(DATASET_ID), *INSTRUCTIONS[(qm, cm)])) + "\n"
        for qm, cm in (_TASK_MODALITIES[t] for t in TASK_IDS)
    ]
    files[INSTRUCTIONS_FILE] = (header + "".join(rows)).encode("utf-8")
    return files, counts


# --------------------------------------------------------------------------------------------------
# Build


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_siblings(out: Path) -> None:
    """Remove temporary folders that builds killed mid-way left next to ``out``."""
    if not out.parent.is_dir():
        return
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(?:tmp|old)-(\d+)-[0-9a-f]+$")
    for p in out.parent.iterdir():
        m = pattern.match(p.name)
        if m and p.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


def _check_replaceable(out: Path) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise MmbenchError(f"{out}: exists and is not a folder; refusing to replace it with {SUITE_NAME}")
    if any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise MmbenchError(
            f"{out}: folder is not empty and holds no {MANIFEST_FILE} from an earlier {SUITE_NAME} build; "
            "refusing to replace it. Choose another folder or remove it."
        )


def build_mini(
    out: Path,
    *,
    stamps_root: Path = DEFAULT_STAMPS_ROOT,
    n_stamps: int | None = DEFAULT_N_STAMPS,
    progress: Progress | None = None,
    workers: int | None = None,
) -> dict:
    """Build ``mbeir-mini`` into ``out`` (replacing an older build) and return its manifest.

    ``n_stamps`` stamps are chosen evenly from the sorted list of PNG stamps with an English caption
    (``None``: all of them). ``workers`` processes convert the images (default: up to 2).
    """
    out = Path(out).expanduser().absolute()
    stamps_root = Path(stamps_root).expanduser()
    if n_stamps is not None and (not isinstance(n_stamps, int) or isinstance(n_stamps, bool) or n_stamps < 1):
        raise MmbenchError(f"n_stamps must be a positive integer or None (all stamps), got {n_stamps!r}")
    if progress:
        progress("scan", 0, 1)
    eligible = scan_stamps(stamps_root)
    if progress:
        progress("scan", 1, 1)
    want = max(1, len(eligible) if n_stamps is None else n_stamps)
    if len(eligible) < want:
        raise DataError(
            stamps_root,
            f"too few stamps: found {len(eligible)} PNG stamps with an English caption (NAME.png + NAME.txt), "
            f"{SUITE_NAME} needs {want}. Reinstall `{PACKAGE}` (sudo apt-get install --reinstall {PACKAGE}) "
            "or ask for fewer stamps (n_stamps=...).",
        )
    stamps = select_evenly(eligible, want)
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1))

    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_siblings(out)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = out.parent / f".{out.name}.tmp-{token}"
    tmp.mkdir()
    try:
        files, counts = _build_records(stamps)
        file_info: dict[str, dict] = {}
        if progress:
            progress("write", 0, len(files))
        for k, (rel, data) in enumerate(sorted(files.items()), 1):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            file_info[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            if progress:
                progress("write", k, len(files))

        jobs, names = [], []
        for s in stamps:
            orig = f"{IMAGE_DIR}/{s.rel}.jpg"
            trans = f"{IMAGE_DIR}/{TRANSFORMED_SUBDIR}/{s.rel}.jpg"
            (tmp / orig).parent.mkdir(parents=True, exist_ok=True)
            (tmp / trans).parent.mkdir(parents=True, exist_ok=True)
            jobs.append((str(s.png), str(tmp / orig), str(tmp / trans)))
            names.append((orig, trans))
        for (orig, trans), ((h1, b1), (h2, b2)) in zip(names, _convert_all(jobs, workers, progress)):
            file_info[orig] = {"sha256": h1, "bytes": b1}
            file_info[trans] = {"sha256": h2, "bytes": b2}

        from PIL import Image

        manifest = {
            "name": SUITE_NAME,
            "builder": __name__,
            "builder_version": BUILDER_VERSION,
            "format": "M-BEIR",
            "dataset_name": DATASET_NAME,
            "dataset_id": DATASET_ID,
            "n_stamps": n_stamps,
            "n_selected": len(stamps),
            "n_eligible": len(eligible),
            "selection": "PNG stamps with an English caption, sorted by relative PNG path; index floor(i*eligible/n)",
            "source": {
                "package": PACKAGE,
                "version": source_package_version(),
                "stamps_root": str(stamps_root),
                "license": "GPL-2.0 (images and captions from Tux Paint; do not redistribute without it)",
            },
            "images": {
                "short_side": SHORT_SIDE,
                "resample": "LANCZOS",
                "format": "JPEG",
                "quality": JPEG_QUALITY,
                "background": "white",
                "transform_task4": TRANSFORM,
                "pillow": Image.__version__,
                "originals": len(stamps),
                "transformed": len(stamps),
            },
            "cross_lingual_langs": list(CROSS_LINGUAL_LANGS),
            "tasks": {k: v for k, v in counts.items() if k.startswith("task")},
            "union": counts["union"],
            "counts": {
                rel: data.count(b"\n") - (1 if rel == INSTRUCTIONS_FILE else 0)
                for rel, data in sorted(files.items())
            },
            "files": dict(sorted(file_info.items())),
        }
        # Written last: a folder with a MANIFEST.json is a finished build.
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")

        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{token}"
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# --------------------------------------------------------------------------------------------------
# Ensure


def read_manifest(root: Path) -> dict | None:
    """The build's manifest, or None when missing or unreadable."""
    try:
        data = json.loads((Path(root) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_is_current(root: Path, n_stamps: int | None = DEFAULT_N_STAMPS, *, verify: bool = False) -> bool:
    """True when ``root`` holds a finished build of this builder version with ``n_stamps`` whose
    files all exist with the recorded sizes (and, with ``verify``, the recorded sha256)."""
    root = Path(root)
    m = read_manifest(root)
    if not m or m.get("builder_version") != BUILDER_VERSION or m.get("n_stamps") != n_stamps:
        return False
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for rel, info in files.items():
        path = root / rel
        try:
            if path.stat().st_size != info["bytes"]:
                return False
            if verify and hashlib.sha256(path.read_bytes()).hexdigest() != info["sha256"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


@contextlib.contextmanager
def _build_lock(root: Path):
    """An exclusive lock next to ``root`` so concurrent ``ensure_mini`` calls build once."""
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_mini(root: Path | None = None, **kw) -> Path:
    """Return ``root`` (default :func:`default_mini_root`), building it first unless it holds a valid
    build of the current :data:`BUILDER_VERSION` and ``n_stamps``. ``kw`` go to :func:`build_mini`."""
    root = Path(root).expanduser().absolute() if root is not None else default_mini_root()
    n_stamps = kw.get("n_stamps", DEFAULT_N_STAMPS)
    if manifest_is_current(root, n_stamps):
        return root
    with _build_lock(root):
        if not manifest_is_current(root, n_stamps):   # another process may have built it meanwhile
            build_mini(root, **kw)
    return root


__all__ = [
    "BUILDER_VERSION",
    "DEFAULT_STAMPS_ROOT",
    "build_mini",
    "default_mini_root",
    "ensure_mini",
    "manifest_is_current",
    "read_manifest",
    "scan_stamps",
]
