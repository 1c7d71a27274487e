"""Session fixtures: a real OpenBao dev server and a real 3-node mTLS NATS cluster (scripts/localstack)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

from catools import ensure_collection_importable  # noqa: E402  pylint: disable=wrong-import-position

ensure_collection_importable()

from catools.localstack import LocalStack  # noqa: E402  pylint: disable=wrong-import-position
from helpers import run_module as _run_module  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def stack_obj(tmp_path_factory):
    """The LocalStack object of the session stack (6h epochs, one 3-node cluster)."""
    stack = LocalStack(tmp_path_factory.mktemp("localstack") / "state")
    stack.up()
    yield stack
    stack.down()


@pytest.fixture(scope="session")
def stack(stack_obj):
    """The session stack's info dict (see scripts/catools/localstack.py)."""
    return stack_obj.info


@pytest.fixture(scope="session")
def bao_client(stack_obj):
    """An hvac client authenticated with the session stack's root token."""
    return stack_obj.bao_client()


@pytest.fixture(scope="session")
def bao_token(stack):
    return Path(stack["openbao"]["token_file"]).read_text(encoding="utf-8").strip()


@pytest.fixture(scope="session")
def openbao_params(stack, bao_token):
    """The `openbao` option dict for modules, pointing at the session stack."""
    return {"url": stack["openbao"]["addr"], "token": bao_token}


@pytest.fixture
def run_module():
    """run_module(name, params, check_mode=False, diff=False) -> result dict (real main(), in-process)."""
    return _run_module


def pytest_configure(config):
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".build" / "collections"))
