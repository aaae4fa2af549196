"""The suite's `xdist_group` marks take effect under `make test` (`-n 2 --dist loadgroup`).

pytest-xdist sends a group to one worker by appending `@<group>` to the node id; with pytest
9.2.0 that rename is silently lost (pytest-dev/pytest-xdist#1386) and every test is scheduled
alone, so the module fixtures and shared workdirs the groups exist for are built on both
workers. setup.cfg holds pytest below 9.2; this test fails if a version that loses the groups
is installed again.
"""

import pytest


@pytest.mark.xdist_group("tiny_workdir")
def test_a_grouped_test_carries_its_group(request):
    if not getattr(request.config.option, "loadgroup", False):  # set on xdist's workers
        pytest.skip("only meaningful under pytest-xdist's --dist loadgroup")
    assert request.node.nodeid.endswith("@tiny_workdir"), (
        f"{request.node.nodeid}: xdist_group had no effect (pytest {pytest.__version__}); "
        "see setup.cfg's pin"
    )
