"""Shared test settings."""

from hypothesis import HealthCheck, settings

# The first call of a Numba kernel compiles it (or loads it from the cache): deadlines would
# make property tests flaky on a busy machine; their cost is kept down by max_examples instead.
settings.register_profile("fastseg", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fastseg")
