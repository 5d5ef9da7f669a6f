"""The state DB's images row for inspected bytes: public EXIF, private fields encrypted, and the
place a GPS position names when reverse geocoding is on.
"""

from __future__ import annotations

from harvest.images.imagecheck import Inspected
from harvest.images.privacy import encrypt_private
from harvest.images.sanitize import POLICY
from harvest.settings.config import HarvestConfig
from harvest.state.models import utcnow
from harvest.storage import Store


def image_row(store: Store, cfg: HarvestConfig, first_url: str, result: Inspected) -> dict:
    """The images row for inspected bytes staged in ``store``."""
    exif, sensitive = _with_place(cfg.reverse_geocode, result.exif, result.sensitive)
    return {
        "sha256": result.sha256,
        "staging": store.location,
        "storage_key": result.staging_key,
        "format": result.format,
        "mime_type": result.mime_type,
        "width": result.width,
        "height": result.height,
        "size_bytes": result.size_bytes,
        "first_url": first_url,
        "created_at": utcnow(),
        "mode": result.mode,
        "has_alpha": result.has_alpha,
        "phash": result.phash,
        "entropy": result.entropy,
        "detail": result.detail,
        "orientation": result.orientation,
        "exif": exif or None,
        "private_fields": sorted(sensitive) or None,
        "exif_private": encrypt_private(sensitive, cfg.metadata_key),
        "clean_sha256": result.clean_sha256,
        "clean_key": result.clean_key,
        "metadata_policy": POLICY,
        "excluded": result.clean_error,
        "rights": result.rights or None,
    }


def _with_place(reverse_geocode: bool, exif: dict, sensitive: dict) -> tuple[dict, dict]:
    """With reverse geocoding on, a photo's GPS position adds its country to the public EXIF fields
    and its nearest town to the private ones."""
    gps = sensitive.get("gps")
    if not reverse_geocode or not gps:
        return exif, sensitive
    from harvest.images.geocode import place_of

    place = place_of(gps.get("latitude"), gps.get("longitude"))
    if place is None:
        return exif, sensitive
    exif = {**exif, "country": place.country, "country_code": place.country_code}
    town = {"town": place.town, "region": place.region, "distance_km": place.distance_km}
    return exif, {**sensitive, "place": town}
