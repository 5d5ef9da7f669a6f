"""The dataset card: README.md at the destination, so whoever finds the dataset learns what is in it,
how it was filtered and whose pictures it holds, plus two histograms as PNG.
"""

from __future__ import annotations

import io
from collections import Counter
from urllib.parse import urlsplit

from sqlalchemy import func, select

from harvest.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Image
from harvest.storage import Store

CARD_KEY = "README.md"
SIZES_KEY = "card/sizes.png"
ASPECTS_KEY = "card/aspect_ratios.png"


def _histogram(values: list[float], title: str, xlabel: str, bins: int = 30) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.subplots()
    axes.hist(values or [0], bins=bins, color="#3b6fb6")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("images")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _table(counter: Counter, header: str) -> str:
    lines = [f"| {header} | images |", "|---|---:|"]
    lines += [
        f"| {name} | {count} |" for name, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return "\n".join(lines)


def _filter_counts(cfg: HarvestConfig) -> Counter:
    with session_scope(cfg.database_url) as session:
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


def render_card(cfg: HarvestConfig, rows: list[dict], filtered: Counter) -> str:
    labels = Counter(row["label"] for row in rows)
    domains = Counter(urlsplit(row["url"] or "").hostname or "unknown" for row in rows)
    formats = Counter(row["format"] for row in rows)
    licences = Counter(row["exif_copyright"] for row in rows if row.get("exif_copyright"))
    total_bytes = sum(row["size_bytes"] for row in rows)
    licence_text = (
        _table(licences, "EXIF copyright")
        if licences
        else "No licence or attribution fields were found in the images' metadata; check each "
        "source page (`page_url` in the manifest) before redistributing."
    )
    return f"""# Image dataset

{len(rows)} images in {len(labels)} classes, {total_bytes / 1e6:.1f} MB, harvested by the image
harvester (latest run `{cfg.run_id}`).

## Layout

- `images/<label>/<sha256>.<ext>`: one folder per class (ImageFolder layout; Keras
  `image_dataset_from_directory("images")` and Hugging Face `load_dataset("imagefolder")` read it).
  File names are the SHA-256 of the bytes.
- `manifests/dataset.parquet`: one row per image (URL, page, alt text, label, score, size, hashes,
  public EXIF fields); `manifests/<run_id>.jsonl`: what each run published.
- `webdataset/*.tar` (when enabled): img2dataset-style shards (`.jpg`/`.png`, `.txt`, `.cls`, `.json`).

## Classes

{_table(labels, "label")}

## Sources

{_table(domains, "domain")}

## Formats

{_table(formats, "format")}

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
- low information: grey-level entropy below {cfg.min_entropy:g} bits
- private EXIF fields (GPS position, owner/artist, serial numbers) removed from every file

Images held back so far, by reason:

{_table(filtered, "reason") if filtered else "none"}

## Licences and attribution

{licence_text}
"""


def write_card(cfg: HarvestConfig, destination: Store, rows: list[dict]) -> str:
    sizes = [((row["width"] * row["height"]) ** 0.5) for row in rows]
    aspects = [row["width"] / row["height"] for row in rows if row["height"]]
    destination.put(SIZES_KEY, _histogram(sizes, "Image size", "sqrt(width x height), pixels"), "image/png")
    destination.put(ASPECTS_KEY, _histogram(aspects, "Aspect ratio", "width / height"), "image/png")
    card = render_card(cfg, rows, _filter_counts(cfg))
    destination.put(CARD_KEY, card.encode("utf-8"), "text/markdown")
    return destination.url(CARD_KEY)
