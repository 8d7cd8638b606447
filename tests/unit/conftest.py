"""The unit tier needs no server. The application-service tests shared with the
integration tier (tests/unit/test_app_services_*.py) run here on the embedded
dependencies: SQLite and the in-process Redis-compatible store."""

from __future__ import annotations

import pytest

from oauthledger.services.deps import Deps


@pytest.fixture
def deps(embedded_deps: Deps) -> Deps:
    """The application services' dependencies of this tier: the embedded ones."""
    return embedded_deps
