"""The family contract on every registered family: the importable suite
:mod:`mstar_engine.testing.family_contract` (tolerances and statistics in its docstring), run on
the toy instances and data of :mod:`tests.families.fixtures`. A plug-in runs the same suite."""
from __future__ import annotations

import pytest

from mstar_engine.families import REGISTRY
from mstar_engine.testing import family_contract
from tests.families.fixtures import out_of_domain, toy, toy_data

_SUBJECTS: dict[str, family_contract.Subject] = {}


@pytest.fixture(params=sorted(REGISTRY))
def subject(request) -> family_contract.Subject:
    name = request.param
    if name not in _SUBJECTS:
        fam = toy(name)
        _SUBJECTS[name] = family_contract.Subject(fam, lambda n, g: toy_data(fam, n, g), out_of_domain(fam))
    return _SUBJECTS[name]


@pytest.mark.parametrize("check", list(family_contract.CHECKS))
def test_contract(subject, check):
    family_contract.CHECKS[check](subject)
