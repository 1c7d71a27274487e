"""Helpers shared by the collection's command-line entry points (``scripts/``).

The entry points import the collection's ``module_utils`` (epoch math, bundle building,
message signing) instead of carrying copies.  ``ensure_collection_importable`` makes
``ansible_collections.securetransport.ca_rotation`` importable whether the collection is
installed (``.../ansible_collections/securetransport/ca_rotation/scripts``) or used from a
source checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COLLECTION_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "securetransport"
NAME = "ca_rotation"


def _importable() -> bool:
    try:
        import ansible_collections.securetransport.ca_rotation.plugins.module_utils  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        return False
    return True


def ensure_collection_importable() -> Path:
    """Put a directory holding ``ansible_collections/securetransport/ca_rotation`` on sys.path.

    Returns that directory (usable as ANSIBLE_COLLECTIONS_PATH).
    """
    root = COLLECTION_ROOT
    if root.parent.name == NAMESPACE and root.parent.parent.name == "ansible_collections":
        base = root.parent.parent.parent
    else:
        base = root / ".build" / "collections"
        link = base / "ansible_collections" / NAMESPACE / NAME
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{NAME}.{os.getpid()}")
            tmp.symlink_to(root, target_is_directory=True)
            os.replace(tmp, link)
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    if not _importable():  # pragma: no cover - only on a broken checkout
        raise ImportError(f"cannot import the collection from {base}; run 'make dev' in {root}")
    return base
