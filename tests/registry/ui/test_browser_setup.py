"""Without a browser the browser tests skip, saying how to get one; in CI they fail."""

from __future__ import annotations

import pytest

from tests.registry.ui.helpers import INSTALL_HINT, chromium


@pytest.fixture
def no_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAHUB_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("DELTAHUB_REQUIRE_BROWSER", raising=False)


@pytest.mark.usefixtures("no_browser")
def test_a_missing_browser_skips_with_the_way_to_install_one() -> None:
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        chromium()


@pytest.mark.usefixtures("no_browser")
@pytest.mark.parametrize(("variable", "setting"), [("CI", "true"),
                                                    ("DELTAHUB_REQUIRE_BROWSER", "1")])
def test_a_missing_browser_fails_in_ci(monkeypatch: pytest.MonkeyPatch, variable: str,
                                       setting: str) -> None:
    monkeypatch.setenv(variable, setting)
    with pytest.raises(pytest.fail.Exception) as failed:
        chromium()
    assert INSTALL_HINT in str(failed.value)
