"""Every docstring example of the public modules runs as written."""
import doctest
import importlib

import pytest

MODULES = ["nnc_core.tensor", "nnc_core.nn"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
