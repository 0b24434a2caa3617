"""Package list for setuptools (the rest is in pyproject.toml): the core, the CLI and every codec
folder under models/, found here so that a new codec needs no line in the packaging."""

from pathlib import Path

from setuptools import setup

MODELS = sorted(p.name for p in Path(__file__).parent.joinpath("models").iterdir() if (p / "__init__.py").is_file())

setup(
    packages=["nmc", "nmc.codec", "nmc.cli", "nmc.models", *(f"nmc.models.{m}" for m in MODELS)],
    package_dir={"nmc": "nmc", "nmc.codec": "codec", "nmc.cli": "cli", "nmc.models": "models"},
    package_data={"nmc": ["py.typed"], "nmc.codec": ["report_page/*"], **{f"nmc.models.{m}": ["weights/*.safetensors"] for m in MODELS}},
)
