"""Offline reverse geocoding of a photo's GPS position to its country (and nearest town), when
``HARVEST_REVERSE_GEOCODE`` asks for it.

GeoNames' towns of 1,000 people or more ship inside the ``reverse-geocode`` package, so nothing is
fetched at run time. The table (~150 MB in memory, under a second to load) is loaded by the first
photo with a position, once per process. The country is public enough to publish; the town, which
with a date can point at a person, goes with the other private fields.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

#: Farther than this from the nearest listed town (open sea, polar ice), a position has no place:
#: the nearest town's country would be a guess.
MAX_DISTANCE_KM = 100.0
EARTH_RADIUS_KM = 6371.0

_lock = threading.Lock()


@dataclass(frozen=True)
class Place:
    country_code: str
    country: str
    town: str
    region: str | None
    distance_km: float


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def place_of(latitude: float | None, longitude: float | None) -> Place | None:
    """The country and nearest town of a position, or None without one within MAX_DISTANCE_KM."""
    if latitude is None or longitude is None:
        return None
    if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0):
        return None
    with _lock:  # the package builds its table on first use; one thread builds it
        import reverse_geocode

        nearest = reverse_geocode.get((latitude, longitude))
    distance = _distance_km(latitude, longitude, nearest["latitude"], nearest["longitude"])
    if distance > MAX_DISTANCE_KM:
        return None
    return Place(
        country_code=nearest["country_code"],
        country=nearest["country"],
        town=nearest["city"],
        region=nearest.get("state"),
        distance_km=round(distance, 1),
    )
