"""The real default models, loaded once per session (converted to safetensors on first use)."""

import pytest

import interplab


@pytest.fixture(scope="session")
def smollm2():
    return interplab.load("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3():
    return interplab.load("gemma3-270m")


@pytest.fixture(params=["smollm2", "gemma3"])
def real_model(request):
    return request.getfixturevalue(request.param)
