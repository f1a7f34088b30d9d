"""Without the ``tracr`` extra, compiling a RASP program says how to install it."""

from __future__ import annotations

import sys

import pytest

from interplab.core.errors import InterplabError, MissingDependencyError
from interplab.groundtruth import tracr_compile


@pytest.fixture
def no_tracr(monkeypatch):
    """Make ``tracr`` (and any of its already imported submodules) unimportable."""
    for name in ["tracr", *[m for m in sys.modules if m.startswith("tracr.")]]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("call", [
    lambda: tracr_compile.compile_program("reverse"),
    lambda: tracr_compile.program_spec("hist"),
    lambda: tracr_compile.compile_rasp(object(), {1, 2}, 3),
], ids=["compile_program", "program_spec", "compile_rasp"])
def test_missing_tracr_names_the_install_command(no_tracr, call):
    with pytest.raises(MissingDependencyError, match=r"needs tracr \(the 'tracr-pypi' package\) "
                       r"with jax and dm-haiku.*Install them with: pip install 'interplab\[tracr\]'"):
        call()


def test_missing_dependency_error_is_an_import_error(no_tracr):
    with pytest.raises(ImportError) as info:
        tracr_compile.import_tracr()
    assert isinstance(info.value, InterplabError)
    assert isinstance(info.value.__cause__, ImportError)


def test_unknown_name_is_refused_before_importing_tracr(no_tracr):
    with pytest.raises(tracr_compile.UnsupportedProgramError, match="Unknown tracr program 'fib'"):
        tracr_compile.compile_program("fib")
