"""The shared fixtures themselves: torch settings do not leak between tests, and run copies are private."""
from pathlib import Path

import torch
# Imported here, before pytester's sys.modules snapshot: torch.use_deterministic_algorithms imports it,
# and torch cannot import it a second time after pytester has dropped it from sys.modules.
import torch._inductor.config  # noqa: F401

CONFTEST = Path(__file__).with_name("conftest.py")

# Two tests run in this order: the first changes torch's process-wide settings, the second expects
# the values from before the first.
LEAKY_TESTS = """
import torch

BEFORE = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())


def test_changes_the_settings():
    torch.set_num_threads(BEFORE[0] + 1)
    torch.use_deterministic_algorithms(not BEFORE[1])
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) != BEFORE


def test_finds_the_settings_from_before():
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == BEFORE
"""


def test_torch_settings_one_test_changes_are_back_for_the_next(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_without_the_conftest_the_same_change_leaks(pytester):
    """The check above can fail: without tests/conftest.py the second test sees the first one's settings."""
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1)


def test_a_run_copy_is_a_separate_folder_and_model(digits_run, digits_run_copy):
    assert digits_run_copy.path != digits_run.path and digits_run_copy.path.is_dir()
    assert sorted(p.name for p in digits_run_copy.path.iterdir()) == sorted(p.name for p in digits_run.path.iterdir())
    assert digits_run_copy.model is not digits_run.model
    first = next(digits_run_copy.model.parameters())
    assert torch.equal(first, next(digits_run.model.parameters()))
    with torch.no_grad():
        first.add_(1.0)  # changing the copy leaves the shared run alone
    assert not torch.equal(first, next(digits_run.model.parameters()))
