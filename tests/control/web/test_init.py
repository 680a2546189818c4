"""web/__init__.py: page modules are mounted from one explicit list that fails loudly."""

from __future__ import annotations

import pytest

from burrow.control import web
from burrow.control.web import PAGE_MODULES, PageModulesWrong, page_routers
from burrow.control.web.admin_pages import SECTIONS


def test_every_page_module_is_listed_and_mounted() -> None:
    assert web.unlisted_page_modules() == []
    assert len(page_routers()) == len(PAGE_MODULES)


def test_a_listed_module_that_is_missing_stops_start_up() -> None:
    with pytest.raises(PageModulesWrong, match="no_such_pages is listed but does not exist"):
        page_routers([*PAGE_MODULES, "burrow.control.web.no_such_pages"])


def test_a_page_module_left_off_the_list_stops_start_up() -> None:
    without_devices = [m for m in PAGE_MODULES if not m.endswith(".device_pages")]
    with pytest.raises(PageModulesWrong, match="device_pages"):
        page_routers(without_devices)


def test_an_admin_section_left_off_its_package_list_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web.admin_pages, "SECTIONS", SECTIONS[:-1])
    assert web.unlisted_page_modules() == [SECTIONS[-1].__name__]


def test_a_listed_module_without_a_router_stops_start_up() -> None:
    with pytest.raises(PageModulesWrong, match="has no router"):
        page_routers([*PAGE_MODULES, "burrow.control.web.forms"])
