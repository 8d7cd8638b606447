"""The application-service tests of tests/unit/test_app_services_*.py, run again on the
real servers: each test function and fixture is imported here unchanged and ``deps`` is
the real-server Deps (real Redis; a SQLite file, and a fresh PostgreSQL schema). Fails,
never skips, when a server is unreachable. Add a test to a unit module, not here."""

from __future__ import annotations

import pytest

from oauthledger.services.deps import Deps
from tests.unit import (
    test_app_services_authenticator,
    test_app_services_consumers,
    test_app_services_dance,
    test_app_services_tokens,
    test_app_services_users,
)
from tests.unit.test_app_services_authenticator import *  # noqa: F403
from tests.unit.test_app_services_consumers import *  # noqa: F403
from tests.unit.test_app_services_dance import *  # noqa: F403
from tests.unit.test_app_services_tokens import *  # noqa: F403
from tests.unit.test_app_services_users import *  # noqa: F403

SHARED = (test_app_services_authenticator, test_app_services_consumers,
          test_app_services_dance, test_app_services_tokens, test_app_services_users)


@pytest.fixture
def deps(server_deps: Deps) -> Deps:
    """The application services' dependencies of this tier: the real servers."""
    return server_deps


def test_star_imports_shadow_nothing() -> None:
    # A test or fixture of one shared module must not replace another module's namesake
    # here: that test would silently not run on the real servers, or run with the wrong
    # fixture.
    seen: dict[str, object] = {}
    for module in SHARED:
        for name, value in vars(module).items():
            if name.startswith("_"):
                continue
            assert seen.setdefault(name, value) is value, f"{module.__name__}.{name}"
            assert globals()[name] is value
