"""Fixtures of the unit tier: the fake API of `fake_api.py` and a client on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_api import FakeAPI

from layers_client import Layers


@pytest.fixture
def fake() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def layers(fake: FakeAPI) -> Iterator[Layers]:
    with fake.client() as client:
        yield client
