"""Write the `.env` docker-compose.yaml reads: this user's id and fresh secrets for the stack.

The compose file has no built-in Fernet key or JWT secret (a key printed in a public file protects
nothing), so each checkout generates its own once (standard library only: it runs before `make setup`). Values already in `.env` are kept, so running it
again never changes a key that encrypted something.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
from pathlib import Path


def generated() -> dict[str, str]:
    return {
        "AIRFLOW_UID": str(os.getuid()) if hasattr(os, "getuid") else "50000",
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(
            secrets.token_bytes(32)
        ).decode(),  # a Fernet key
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
    }


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                values[name.strip()] = value.strip()
    return values


def write_env(path: Path) -> list[str]:
    """Adds the missing settings to `path`; returns the names it added."""
    existing = read_env(path)
    missing = {name: value for name, value in generated().items() if name not in existing}
    if missing:
        text = path.read_text() if path.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{name}={value}\n" for name, value in missing.items())
        path.write_text(text)
        path.chmod(0o600)
    return sorted(missing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args()
    added = write_env(args.env_file)
    print(f"{args.env_file}: added {', '.join(added)}" if added else f"{args.env_file}: already complete")


if __name__ == "__main__":
    main()
