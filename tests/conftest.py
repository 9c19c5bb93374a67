import pytest

from .support import close_connections


@pytest.fixture(autouse=True)
def _close_client_connections():
    yield
    close_connections()
