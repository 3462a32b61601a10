"""The operations table: every row names a method the client has, on the attribute of its
tag, and every public method of those attributes (but the `iter_*` walks) has its row."""

from __future__ import annotations

import inspect

from layers_client import OPERATIONS, Layers

TAGS = ("content", "social", "publishing", "webhooks", "health")


def test_every_operation_has_its_method() -> None:
    with Layers(api_key="lp_test_k_s", base_url="https://api.test") as layers:
        for op_id, op in OPERATIONS.items():
            method = getattr(getattr(layers, op.tag), op.name, None)
            assert callable(method), f"{op_id}: no layers.{op.call}"
            params = inspect.signature(method).parameters.values()
            # Keyword-only, every one.
            assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), op_id


def test_every_method_is_an_operation_or_a_walk() -> None:
    named = {op.call for op in OPERATIONS.values()}
    with Layers(api_key="lp_test_k_s", base_url="https://api.test") as layers:
        for tag in TAGS:
            for name, _ in inspect.getmembers(getattr(layers, tag), inspect.ismethod):
                if name.startswith("_"):
                    continue
                if name.startswith("iter_"):
                    assert f"{tag}.list_{name[5:]}" in named, name
                else:
                    assert f"{tag}.{name}" in named, f"{tag}.{name} is in no row"


def test_the_table_is_the_contracts() -> None:
    assert len(OPERATIONS) == 26
    assert {op.tag for op in OPERATIONS.values()} == set(TAGS)
    assert len({(op.method, op.path) for op in OPERATIONS.values()}) == 26
