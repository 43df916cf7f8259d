"""Shared test settings."""

from hypothesis import HealthCheck, settings

# The first call of a Numba kernel compiles it (or loads it from the cache): deadlines would
# make property tests flaky on a busy machine; their cost is kept down by max_examples instead.
settings.register_profile("fastseg", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fastseg")


def pytest_collection_finish(session):  # noqa: ANN001, ANN201
    """Compile the main job's Numba kernels once, announced, before the first test needs them
    (a fresh checkout: about 30 s; later sessions load them from Numba's cache and skip this).
    Not in an xdist worker (the kernels compile where they are first called, as before), not
    with --collect-only, not when FASTSEG_TEST_WARMUP=0."""
    import os
    import time

    config = session.config
    if (
        not session.items
        or config.option.collectonly
        or hasattr(config, "workerinput")
        or os.environ.get("FASTSEG_TEST_WARMUP", "1") == "0"
    ):
        return
    from fastseg import warmup

    if not warmup.needed():
        return
    tr = config.pluginmanager.get_plugin("terminalreporter")
    say = tr.write_line if tr is not None else print
    say("fastseg: compiling the Numba kernels (first run only, about 30 s; cached afterwards)...")
    t0 = time.perf_counter()
    warmup.warm_up()
    say(f"fastseg: kernels compiled in {time.perf_counter() - t0:.1f} s")
