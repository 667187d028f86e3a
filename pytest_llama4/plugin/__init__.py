"""pytest's entry point for pytest-llama4 (pytest11 `llama4`): the options, and the switch.

Installed in a shared venv, the plugin stays out of every session that did not ask for it (plugin/activation.py
says what asking is): such a session gets the options in `--help` and nothing else. Everything else is imported
and registered only once the session asked (plugin/hooks.py).
"""

from __future__ import annotations

import importlib

import pytest

from ..config.settings import add_options
from . import activation


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    activation.add_switch(parser)


@pytest.hookimpl(tryfirst=True)  # before junitxml's pytest_configure reads the report path
def pytest_configure(config: pytest.Config) -> None:
    if config.option.help:
        return  # `pytest --help` must work even when the environment holds a bad setting
    if activation.requested(config) is None:
        config.pluginmanager.register(activation.Dormant(), "llama4-dormant")
        return
    # The whole plugin, only for sessions that asked for it. import_module, not `from . import`: that would reuse a
    # stale attribute after pytester's in-process runs reset sys.modules.
    hooks = importlib.import_module(f"{__name__}.hooks")
    config.pluginmanager.register(hooks, "llama4-session")
    hooks.activate(config)
