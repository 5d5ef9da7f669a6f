"""Put images straight into staging and the state DB, as if crawled and downloaded, for stage tests."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image
from stage_setup import record_run

from harvest.settings.config import HarvestConfig, build_config
from harvest.state.db import insert_ignore, migrate, session_scope
from harvest.state.models import Candidate, Status, utcnow
from harvest.state.models import Image as ImageRow
from harvest.storage import open_store


def sample_photos() -> dict[str, Image.Image]:
    """Real photos shipped by installed packages (no network, nothing committed)."""
    import skimage.data
    from matplotlib import cbook
    from sklearn.datasets import load_sample_image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as hopper:
        hopper.load()
        hopper = hopper.convert("RGB")
    return {
        "chelsea": Image.fromarray(skimage.data.chelsea()),
        "coffee": Image.fromarray(skimage.data.coffee()),
        "grace_hopper": hopper,
        "china": Image.fromarray(load_sample_image("china.jpg")),
        "flower": Image.fromarray(load_sample_image("flower.jpg")),
        "astronaut": Image.fromarray(skimage.data.astronaut()),
    }


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def staged_config(
    database_url: str, tmp_path: Path, labels: list[str], run_id: str = "manual__staged", **params
) -> HarvestConfig:
    return build_config(
        {"seeds": [], "labels": labels, "destination": str(tmp_path / "dataset"), **params},
        run_id,
        database_url=database_url,
        require_seeds=False,
    )


def stage(cfg: HarvestConfig, files: dict[str, bytes]) -> dict[str, str]:
    """Store ``name -> bytes`` as downloaded images of ``cfg.run_id``; returns name -> sha256.

    Width and height are recorded as given by Pillow's header read, like the download stage does,
    so a file that is truncated after its header still looks like an image until it is decoded.
    """
    migrate(cfg.database_url)
    store = open_store(cfg.staging, cfg.s3)
    shas: dict[str, str] = {}
    with session_scope(cfg.database_url) as session:
        record_run(session, cfg)
    for index, (name, data) in enumerate(files.items()):
        sha = hashlib.sha256(data).hexdigest()
        shas[name] = sha
        key = f"images/{sha}.jpg"
        store.put(key, data, "image/jpeg")
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        url = f"http://photos.example/{name}.jpg"
        with session_scope(cfg.database_url) as session:
            insert_ignore(
                session,
                ImageRow,
                [
                    {
                        "sha256": sha,
                        "staging": cfg.staging,
                        "storage_key": key,
                        "format": "JPEG",
                        "mime_type": "image/jpeg",
                        "width": width,
                        "height": height,
                        "size_bytes": len(data),
                        "first_url": url,
                        "created_at": utcnow(),
                    }
                ],
                ["sha256"],
            )
            insert_ignore(
                session,
                Candidate,
                [
                    {
                        "run_id": cfg.run_id,
                        "url": url,
                        "page_url": "http://photos.example/",
                        "source": "img",
                        "alt": name,
                        "shard": index % cfg.num_shards,
                        "status": Status.DONE,
                        "sha256": sha,
                        "attempts": 1,
                    }
                ],
                ["run_id", "url"],
            )
    return shas
