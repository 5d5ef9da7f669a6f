"""Private EXIF fields (GPS, owner, serial numbers) at rest: Fernet tokens, never clear text.

Without a key the values are not stored at all, only the names of the fields that were found.
To read them back: ``python -m harvest.images.privacy <sha256>`` with HARVEST_METADATA_KEY and
HARVEST_DATABASE_URL set, or :func:`decrypt_private` from Python.
"""

from __future__ import annotations

import json
import os
import sys

from cryptography.fernet import Fernet


def encrypt_private(fields: dict, key: str | None) -> str | None:
    if not fields or not key:
        return None
    return Fernet(key).encrypt(json.dumps(fields, sort_keys=True).encode("utf-8")).decode("ascii")


def decrypt_private(token: str, key: str) -> dict:
    return json.loads(Fernet(key).decrypt(token.encode("ascii")))


def main(argv: list[str]) -> int:
    from harvest.settings.config import default_database_url, normalize_database_url
    from harvest.state.db import session_scope
    from harvest.state.models import Image

    if len(argv) != 1 or not os.environ.get("HARVEST_METADATA_KEY"):
        print("usage: HARVEST_METADATA_KEY=... python -m harvest.images.privacy <sha256>", file=sys.stderr)
        return 2
    url = normalize_database_url(default_database_url(os.environ))
    with session_scope(url) as session:
        image = session.get(Image, argv[0])
        if image is None or not image.exif_private:
            print(f"{argv[0]}: no encrypted private metadata", file=sys.stderr)
            return 1
        token = image.exif_private
    print(json.dumps(decrypt_private(token, os.environ["HARVEST_METADATA_KEY"]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
