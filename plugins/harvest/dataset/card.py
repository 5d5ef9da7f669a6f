"""The dataset card: README.md at the destination, so whoever finds the dataset learns what is in it,
how it was filtered and whose pictures it holds, plus two histograms as PNG.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import urlsplit

from sqlalchemy import func, select

from harvest.dataset.stats import optout_key
from harvest.licences import UNKNOWN, requires_attribution
from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image
from harvest.storage import Store

CARD_KEY = "README.md"
#: author, source and licence of every published image whose licence requires attribution
ATTRIBUTION_KEY = "ATTRIBUTION.md"
SIZES_KEY = "card/sizes.png"
ASPECTS_KEY = "card/aspect_ratios.png"


def _histogram(values: Sequence[float], title: str, xlabel: str, bins: int = 30) -> bytes:
    """A histogram as PNG, drawn with Pillow: a plotting library would cost a second or two of import
    and first-render time on every publish, for two charts of bars."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    counts, edges = np.histogram(np.asarray(values if len(values) else [0.0], dtype=np.float64), bins=bins)
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


def _layout(exports: Iterable[str]) -> str:
    """The layout lines for the files this destination actually gets besides the images."""
    lines = []
    if "parquet" in exports:
        lines.append(
            "- `manifests/dataset.parquet`: one row per image (URL, page, alt text, label, score, size,\n"
            "  hashes, public EXIF fields)."
        )
    lines.append("- `manifests/<run_id>.jsonl`: what each run published.")
    if "webdataset" in exports:
        lines.append(
            "- `webdataset/*.tar`: img2dataset-style shards (`.jpg`/`.png`, `.txt`, `.cls`, `.json`)."
        )
    return "\n".join(lines)


@dataclass
class CardFigures:
    """What the card says about the dataset, gathered a page of rows at a time: counters and the
    histograms' values (8 bytes an image each), never the rows themselves."""

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
    cfg: HarvestConfig, figures: CardFigures, filtered: Counter, optouts: Counter | None = None
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
    return f"""# Image dataset

{figures.images} images in {len(figures.labels)} classes, {figures.total_bytes / 1e6:.1f} MB, harvested by the image
harvester. Which run published each image is in the manifests.

## Layout

- `images/<label>/<sha256>.<ext>`: one folder per class (ImageFolder layout; Keras
  `image_dataset_from_directory("images")` and Hugging Face `load_dataset("imagefolder")` read it).
  File names are the SHA-256 of the bytes.
{_layout(cfg.exports)}

## Classes

{_table(figures.labels, "label")}

## Sources

{_table(figures.domains, "domain")}

## Formats

{_table(figures.formats, "format")}

## Sizes

![image sizes]({SIZES_KEY})
![aspect ratios]({ASPECTS_KEY})

## Filters applied

- classifier `{cfg.model}`: a target class in the top {cfg.top_k} with probability >= {cfg.threshold}
- minimum size {cfg.min_width}x{cfg.min_height} pixels; still raster images only (JPEG, PNG, GIF,
  WebP, BMP, TIFF; format decided by the file's bytes, every pixel decoded)
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


def write_card(cfg: HarvestConfig, destination: Store, figures: CardFigures) -> str:
    destination.put(
        SIZES_KEY, _histogram(figures.sizes, "Image size", "sqrt(width x height), pixels"), "image/png"
    )
    destination.put(ASPECTS_KEY, _histogram(figures.aspects, "Aspect ratio", "width / height"), "image/png")
    card = render_card(cfg, figures, _filter_counts(cfg.database_url), _optout_counts(cfg.database_url))
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
