"""The data plane: the hot path, one module per concept (README, "Layout")."""


def hot_path() -> str:
    """"compiled" when these modules run as the Cython build (setup.py), else "pure python"."""
    from . import exchange

    return "pure python" if exchange.__file__.endswith(".py") else "compiled"
