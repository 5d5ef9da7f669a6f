"""The dataset card: README.md at the destination, so whoever finds the dataset learns what is in it,
how each run filtered it and whose pictures it holds, and how to load it. It opens with the YAML
header the Hugging Face Hub and ``datasets.load_dataset(<folder>)`` read: the configs point at the
image folder and the Parquet manifest only, so the card's own images, variants and thumbnails are
never loaded as dataset images. Beside it go histograms of sizes, aspect ratios and scores, and a
sheet of sample thumbnails per label (``card/``).
"""

from __future__ import annotations

import io
import shutil
import tempfile
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import func, select

from harvest.dataset.layout import (
    ATTRIBUTION_KEY,
    CARD_KEY,
    CLASSES_KEY,
    METADATA_KEY,
    PARQUET_KEY,
    SHARDS_KEY,
    TRAINING_PREFIX,
)
from harvest.dataset.runs import RunFilters, published_runs
from harvest.dataset.stats import optout_key
from harvest.images.variants import TRAINING_JPEG_QUALITY
from harvest.licences import UNKNOWN, requires_attribution
from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image
from harvest.storage import Store, Stores

if TYPE_CHECKING:
    from harvest.dataset.exports import DatasetRows

SIZES_KEY = "card/sizes.png"
ASPECTS_KEY = "card/aspect_ratios.png"
SCORES_KEY = "card/scores.png"
SAMPLES_KEY = "card/samples.jpg"
#: sample thumbnails per label on the card, their side in pixels, and the labels shown at most
SAMPLES_PER_LABEL = 4
SAMPLE_SIDE = 96
SAMPLE_LABELS = 40


def _histogram(
    values: Sequence[float],
    title: str,
    xlabel: str,
    bins: int = 30,
    value_range: tuple[float, float] | None = None,
) -> bytes:
    """A histogram as PNG, drawn with Pillow: a plotting library would cost a second or two of import
    and first-render time on every publish, for two charts of bars."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    values_ = np.asarray(values if len(values) else [0.0], dtype=np.float64)
    counts, edges = np.histogram(values_, bins=bins, range=value_range)
    width, height = 600, 350
    left, right, top, bottom = 64, 20, 40, 58  # margins around the plotting area
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(15), ImageFont.load_default(12)
    area_w, area_h = width - left - right, height - top - bottom
    peak = max(int(counts.max()), 1)
    bar = area_w / len(counts)
    for i, count in enumerate(counts):
        if count:
            x0 = left + i * bar
            draw.rectangle(
                [
                    round(x0) + 1,
                    top + area_h - round(count / peak * area_h),
                    round(x0 + bar) - 1,
                    top + area_h,
                ],
                fill=(59, 111, 182),
            )
    draw.line([(left, top), (left, top + area_h), (left + area_w, top + area_h)], fill="black", width=1)
    for i in range(5):  # x ticks at the edges of the data range, y ticks from 0 to the tallest bar
        x = left + i * area_w / 4
        value = edges[0] + i * (edges[-1] - edges[0]) / 4
        draw.line([(x, top + area_h), (x, top + area_h + 4)], fill="black")
        draw.text((x, top + area_h + 6), _tick(value), fill="black", font=small, anchor="ma")
        y = top + area_h - i * area_h / 4
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((left - 6, y), _tick(i * peak / 4), fill="black", font=small, anchor="rm")
    draw.text((left + area_w / 2, 12), title, fill="black", font=font, anchor="ma")
    draw.text((left + area_w / 2, height - 20), xlabel, fill="black", font=font, anchor="ma")
    label = Image.new("RGB", (120, 20), "white")
    ImageDraw.Draw(label).text((60, 10), "images", fill="black", font=font, anchor="mm")
    image.paste(label.rotate(90, expand=True), (4, top + area_h // 2 - 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _tick(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or float(value).is_integer() else f"{value:.2f}"


def _table(counter: Counter, header: str) -> str:
    lines = [f"| {header} | images |", "|---|---:|"]
    lines += [
        f"| {name} | {count} |" for name, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return "\n".join(lines)


def _filter_counts(database_url: str) -> Counter:
    with session_scope(database_url) as session:
        excluded = session.execute(
            select(Image.excluded, func.count()).where(Image.excluded.is_not(None)).group_by(Image.excluded)
        ).all()
        duplicates = session.scalar(
            select(func.count()).select_from(Image).where(Image.duplicate_of.is_not(None))
        )
    counts: Counter = Counter()
    for reason, count in excluded:
        counts[reason.split(":")[0].split(" (")[0]] += count
    if duplicates:
        counts["near duplicate"] += duplicates
    return counts


@dataclass
class CardFigures:
    """What the card says about the dataset, gathered a page of rows at a time: counters, the
    histograms' values (8 bytes an image each) and a few sample images per label, never the rows."""

    images: int = 0
    total_bytes: int = 0
    labels: Counter = field(default_factory=Counter)
    domains: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)
    licences: Counter = field(default_factory=Counter)
    #: "| author | source | licence |" lines of the images whose licence requires attribution
    #: (~200 bytes each, spilled to a temporary file past 1 MB)
    attributions: IO[bytes] = field(
        default_factory=lambda: tempfile.SpooledTemporaryFile(1 << 20)  # noqa: SIM115 - closed when written
    )
    attributed: int = 0
    sizes: array = field(default_factory=lambda: array("d"))
    aspects: array = field(default_factory=lambda: array("d"))
    scores: array = field(default_factory=lambda: array("d"))
    #: label -> up to SAMPLES_PER_LABEL square thumbnails (JPEG bytes, a few KB each)
    samples: dict[str, list[bytes]] = field(default_factory=dict)

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            self.images += 1
            self.total_bytes += row["size_bytes"]
            self.labels[row["label"]] += 1
            self.domains[urlsplit(row["url"] or "").hostname or "unknown"] += 1
            self.formats[row["format"]] += 1
            spdx = row.get("license") or UNKNOWN
            self.licences[spdx] += 1
            if requires_attribution(spdx):
                source = row.get("page_url") or row["url"]
                line = f"| {_cell(row.get('author') or 'not named')} | {source} | {spdx} | {row['key']} |\n"
                self.attributions.write(line.encode("utf-8"))
                self.attributed += 1
            self.sizes.append((row["width"] * row["height"]) ** 0.5)
            if row["height"]:
                self.aspects.append(row["width"] / row["height"])
            if row["score"] is not None:
                self.scores.append(row["score"])

    def add_samples(self, rows: list[dict], stores: Stores) -> None:
        """Keep a thumbnail of the first images of each label (rows come in key order, and keys end
        in the content hash, so these are an arbitrary but stable pick)."""
        for row in rows:
            kept = self.samples.setdefault(row["label"], [])
            if len(kept) >= SAMPLES_PER_LABEL or len(self.samples) > SAMPLE_LABELS:
                continue
            try:
                kept.append(_thumbnail(stores(row["staging"]).get(row["staging_key"])))
            except Exception:  # noqa: BLE001 - a sample that cannot be read is left out of the card
                continue


def _thumbnail(data: bytes) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as source:
        image = ImageOps.fit(ImageOps.exif_transpose(source).convert("RGB"), (SAMPLE_SIDE, SAMPLE_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _sample_sheet(samples: dict[str, list[bytes]]) -> bytes:
    """One row per label: its name, then its sample thumbnails."""
    from PIL import Image, ImageDraw, ImageFont

    labels = sorted(label for label, thumbs in samples.items() if thumbs)[:SAMPLE_LABELS]
    name_w, gap = 180, 6
    width = name_w + SAMPLES_PER_LABEL * (SAMPLE_SIDE + gap) + gap
    sheet = Image.new("RGB", (width, max(1, len(labels)) * (SAMPLE_SIDE + gap) + gap), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(14)
    for row, label in enumerate(labels):
        y = gap + row * (SAMPLE_SIDE + gap)
        draw.text((gap, y + SAMPLE_SIDE // 2), label[:24], fill="black", font=font, anchor="lm")
        for col, thumb in enumerate(samples[label]):
            with Image.open(io.BytesIO(thumb)) as image:
                sheet.paste(image, (name_w + gap + col * (SAMPLE_SIDE + gap), y))
    buffer = io.BytesIO()
    sheet.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def size_category(images: int) -> str:
    """The Hugging Face Hub's size category for a number of images."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if images < limit:
            return name
    return "100K<n<1M" if images < 1_000_000 else "1M<n<10M"


def yaml_header(cfg: HarvestConfig, images: int) -> str:
    """The card's YAML front matter: licence, task, size, and the configs ``load_dataset`` reads.
    Only the image folders are named, so ``card/``, ``variants/``, ``thumbnails/`` and the WebDataset
    shards are never taken for dataset images. The Parquet manifest has no config here: ``datasets``
    picks one builder for every config of a folder (from the first config's files), so a Parquet
    config beside image configs would load no rows; the card's snippet loads it with the
    ``parquet`` builder instead."""
    lines = [
        "---",
        "license: other",
        "license_name: per-image",
        "license_details: >-",
        "  Images collected from public web pages; each keeps its author's rights. See the source",
        "  page of each image (page_url) before redistributing.",
        "task_categories:",
        "- image-classification",
        "size_categories:",
        f"- {size_category(images)}",
        "pretty_name: Harvested image dataset",
        "configs:",
        "- config_name: default",
        "  default: true",
        "  data_files:",
        "  - split: train",
        "    path: images/**",
    ]
    if cfg.publish_format == "jpeg":
        lines += [
            "- config_name: jpeg",
            "  data_files:",
            "  - split: train",
            f"    path: {TRAINING_PREFIX}**",
        ]
    return "\n".join([*lines, "---"])


def _runs_table(runs: list[tuple[RunFilters, int]]) -> str:
    if not runs:
        return "none"
    lines = [
        "| run | model | labels | top_k | threshold | minimum size | images |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for run, count in runs:
        labels = ", ".join(run.labels) or "-"
        size = f"{run.min_width}x{run.min_height}" if run.min_width else "-"
        lines.append(
            f"| `{run.run_id}` | `{run.model or '-'}` | {labels} | {_value(run.top_k)} | "
            f"{_value(run.threshold)} | {size} | {count} |"
        )
    return "\n".join(lines)


def _value(value: object) -> str:
    return "-" if value is None else str(value)


def _layout(cfg: HarvestConfig) -> str:
    """The layout lines for the files this destination actually gets besides the images."""
    lines = [
        f"- `{METADATA_KEY}`: one row per image with its `file_name` (Hugging Face `imagefolder`",
        "  attaches these columns to each image).",
        f"- `{CLASSES_KEY}`: label -> class index; labels are only ever appended, so an index keeps",
        "  its meaning as the dataset grows.",
    ]
    if cfg.publish_format == "jpeg":
        lines.append(
            f"- `{TRAINING_PREFIX}<label>/<sha256>.jpg`: a training copy of every image, RGB JPEG at "
            f"quality {TRAINING_JPEG_QUALITY}\n  (the originals stay in `images/`)."
        )
    if "parquet" in cfg.exports:
        lines.append(f"- `{PARQUET_KEY}`: one row per image, the same columns as `metadata.jsonl`.")
    lines.append("- `manifests/<run>.jsonl`: what each run published (file names are run ids as slugs).")
    if "webdataset" in cfg.exports:
        lines.append(
            "- `webdataset/<run>-<n>.tar`: WebDataset shards (image, `.cls` class index, `.txt`, `.json`);\n"
            f"  `{SHARDS_KEY}` lists them."
        )
    lines.append(
        "- `card/`, `variants/`, `thumbnails/`: the card's pictures and resized copies; no config loads them."
    )
    return "\n".join(lines)


def _snippets(cfg: HarvestConfig) -> str:
    parts = [
        "```python",
        "import json, datasets",
        'ds = datasets.load_dataset("path/to/dataset", split="train")  # images + metadata.jsonl columns',
        'names = sorted(json.load(open("path/to/dataset/classes.json")).items(), key=lambda kv: kv[1])',
        'ds = ds.cast_column("label", datasets.ClassLabel(names=[name for name, _ in names]))',
    ]
    if "parquet" in cfg.exports:
        parts += [
            f'manifest = datasets.load_dataset("parquet", data_files="path/to/dataset/{PARQUET_KEY}", split="train")',
            "",
            "import pandas as pd",
            f'rows = pd.read_parquet("path/to/dataset/{PARQUET_KEY}")',
        ]
    if "webdataset" in cfg.exports:
        parts += [
            "",
            "import webdataset as wds",
            f'shards = [s["url"] for s in json.load(open("path/to/dataset/{SHARDS_KEY}"))["shards"]]',
            'samples = wds.WebDataset([f"path/to/dataset/{s}" for s in shards], shardshuffle=False)',
            'samples = samples.decode("pil").to_tuple("jpg;png;gif;webp", "cls", "json")',
        ]
    parts += [
        "",
        "import tensorflow as tf",
        'train = tf.keras.utils.image_dataset_from_directory("path/to/dataset/'
        + (TRAINING_PREFIX.rstrip("/") if cfg.publish_format == "jpeg" else "images")
        + '", image_size=(224, 224))',
        "```",
    ]
    return "\n".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "/").split())[:200]


def _optout_counts(database_url: str) -> Counter:
    """Images skipped for an opt-out, by directive and where it was found, over every run."""
    counts: Counter = Counter()
    with session_scope(database_url) as session:
        for (optout,) in session.execute(
            select(Candidate.optout).where(Candidate.optout.is_not(None)).execution_options(yield_per=1000)
        ):
            if isinstance(optout, dict):
                counts[optout_key(optout)] += 1
    return counts


def render_card(
    cfg: HarvestConfig,
    figures: CardFigures,
    filtered: Counter,
    runs: list[tuple[RunFilters, int]],
    optouts: Counter | None = None,
) -> str:
    licence_text = (
        _table(figures.licences, "licence (SPDX)")
        + "\n\nLicences are read from the source page (rel=license, Creative Commons links and badges "
        "beside the image, JSON-LD) and the file's XMP/IPTC/EXIF; `unknown` means none was found: check "
        "the source page (`page_url` in the manifest) before redistributing."
        + (
            f" Authors, sources and licences of the {figures.attributed} images whose licence requires "
            f"attribution: [{ATTRIBUTION_KEY}]({ATTRIBUTION_KEY})."
            if figures.attributed
            else ""
        )
    )
    filtered_licences = (
        f"- licences kept: {', '.join(cfg.licenses)} (other licences and `unknown` skipped)\n"
        if cfg.licenses
        else ""
    )
    optout_text = (
        _table(optouts, "directive (where found)") if optouts else "No image was skipped for an opt-out."
    )
    return f"""{yaml_header(cfg, figures.images)}

# Image dataset

{figures.images} images in {len(figures.labels)} classes, {figures.total_bytes / 1e6:.1f} MB, harvested by the image
harvester. Which run published each image is in the manifests.

## Load it

{_snippets(cfg)}

## Layout

- `images/<label>/<sha256>.<ext>`: one folder per class (ImageFolder layout; Keras
  `image_dataset_from_directory("images")` and Hugging Face `load_dataset("imagefolder")` read it).
  File names are the SHA-256 of the bytes.
{_layout(cfg)}

## Classes

{_table(figures.labels, "label")}

![sample images per label]({SAMPLES_KEY})

## Sources

{_table(figures.domains, "domain")}

## Formats

{_table(figures.formats, "format")}

## Sizes and scores

![image sizes]({SIZES_KEY})
![aspect ratios]({ASPECTS_KEY})
![classifier scores]({SCORES_KEY})

## Filters applied

Each run decided with its own classifier and thresholds:

{_runs_table(runs)}

and every run applied these rules (with the settings of the latest publish):

- a target class in the run's top_k with at least the run's threshold probability
- still raster images only (JPEG, PNG, GIF, WebP, BMP, TIFF; format decided by the file's bytes,
  every pixel decoded), at least the run's minimum size
- near duplicates: perceptual hashes within {cfg.near_dup_distance} bits; the largest, least
  compressed copy is kept
- placeholders: pictures that {cfg.placeholder_min_urls} or more URLs of one host serve
- low information: grey-level entropy below {cfg.min_entropy:g} bits and detail beside the
  background below {cfg.min_detail:g} bits (a flat logo or fill, not an object on a plain background)
- private EXIF fields (GPS position, owner/artist, serial numbers) removed from every file
- opt-outs honoured: X-Robots-Tag and robots meta directives {", ".join(cfg.optout_directives)}
  (also scoped to this harvester's user agent), TDMRep (header, meta, /.well-known/tdmrep.json),
  robots.txt{" and the groups of " + ", ".join(cfg.obey_robots_agents) if cfg.obey_robots_agents else ""}
{filtered_licences}
Images held back so far, by reason:

{_table(filtered, "reason") if filtered else "none"}

## Opt-outs honoured

Images not harvested because their site opted out, by directive:

{optout_text}

## Licences and attribution

{licence_text}
"""


def write_card(cfg: HarvestConfig, destination: Store, figures: CardFigures, dataset: DatasetRows) -> str:
    destination.put(
        SIZES_KEY, _histogram(figures.sizes, "Image size", "sqrt(width x height), pixels"), "image/png"
    )
    destination.put(ASPECTS_KEY, _histogram(figures.aspects, "Aspect ratio", "width / height"), "image/png")
    destination.put(
        SCORES_KEY, _histogram(figures.scores, "Classifier score", "probability", 20, (0.0, 1.0)), "image/png"
    )
    destination.put(SAMPLES_KEY, _sample_sheet(figures.samples), "image/jpeg")
    runs = published_runs(cfg.database_url, cfg.destination, dataset.runs)
    card = render_card(cfg, figures, _filter_counts(cfg.database_url), runs, _optout_counts(cfg.database_url))
    destination.put(CARD_KEY, card.encode("utf-8"), "text/markdown")
    _write_attributions(destination, figures)
    return destination.url(CARD_KEY)


def _write_attributions(destination: Store, figures: CardFigures) -> None:
    """ATTRIBUTION.md: one line per image whose licence requires attribution (removed when none)."""
    if not figures.attributed:
        figures.attributions.close()
        if destination.exists(ATTRIBUTION_KEY):
            destination.delete(ATTRIBUTION_KEY)
        return
    figures.attributions.seek(0)
    head = (
        "# Attribution\n\nThe images below are published under licences that require crediting "
        "their authors.\n\n| author | source | licence | file |\n|---|---|---|---|\n"
    )
    with tempfile.TemporaryFile() as sink:
        sink.write(head.encode("utf-8"))
        shutil.copyfileobj(figures.attributions, sink)
        figures.attributions.close()
        sink.seek(0)
        destination.put_file(ATTRIBUTION_KEY, sink, "text/markdown")
