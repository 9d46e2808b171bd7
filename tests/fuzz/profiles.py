"""Deterministic hypothesis profiles, applied per test (``@FUZZ``), never loaded globally.

``FUZZ`` (the default run) is derandomized with few examples so the whole folder stays fast
and reproducible; ``FUZZ_SLOW`` explores more and backs the ``@pytest.mark.slow`` twins.
Other folders keep whatever hypothesis settings they choose.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Examples share one Redis, gateway or consumer (function-scoped fixtures) on purpose:
# the property is that they keep working across every hostile input.
_COMMON: dict[str, object] = {
    "derandomize": True,
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("bookgen-fuzz", max_examples=60, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("bookgen-fuzz-slow", max_examples=400, **_COMMON)  # type: ignore[arg-type]
FUZZ = settings.get_profile("bookgen-fuzz")
FUZZ_SLOW = settings.get_profile("bookgen-fuzz-slow")
