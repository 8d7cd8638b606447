"""(being written)"""

from __future__ import annotations

from typing import Any


def add_routes(app: Any, deps: Any) -> None:
    """Mount the routes (none yet)."""
