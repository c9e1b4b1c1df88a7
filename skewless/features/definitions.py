"""The feature definitions a deployment runs with: an input, not an import.

They are a module of DSL declarations, ``specs.py`` in ``settings.feature_repo_path``
(the checkout's ``feature_repo`` by default), exposing ``ENTITIES``, ``VIEWS`` and
``SERVICES``. The composition root (``cli``) loads them once with ``load`` and passes
them to the ETL, the Feast object builder and the stores; the kernel and the stages never
name the module. Serving, training and monitoring read them back from Feast's registry.

The module is imported as ``<directory name>.specs`` (``feature_repo.specs``) with the
directory's parent on ``sys.path``, not under a private name: Feast pickles a request
transform's function by module name into the registry, so whoever reads the registry
back (serving) imports it under the same name.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from skewless.errors import ConfigError
from skewless.features.dsl import Entity, FeatureServiceSpec, WindowedView
from skewless.settings import Settings

FILE = "specs.py"


@dataclass(frozen=True)
class Definitions:
    entities: tuple[Entity, ...]
    views: tuple[WindowedView, ...]
    services: tuple[FeatureServiceSpec, ...]
    module: str  # the module they were loaded from, e.g. feature_repo.specs


def load(settings: Settings) -> Definitions:
    """The definitions in ``<feature_repo_path>/specs.py``."""
    repo = Path(settings.feature_repo_path).resolve()
    path = repo / FILE
    if not path.is_file():
        raise ConfigError(f"no feature definitions at {path}",
                          f"set feature_repo_path to a directory holding {FILE} (ENTITIES, VIEWS, SERVICES)")
    name = f"{repo.name}.{FILE[:-3]}"
    if name not in sys.modules and str(repo.parent) not in sys.path:
        sys.path.insert(0, str(repo.parent))
    module = importlib.import_module(name)
    where = Path(module.__file__ or "").resolve()
    if where != path:
        raise ConfigError(f"feature_repo_path {repo} cannot be loaded as {name}: that name imports {where}",
                          "name the feature repository's directory differently, or point feature_repo_path at that one")
    missing = [a for a in ("ENTITIES", "VIEWS", "SERVICES") if not hasattr(module, a)]
    if missing:
        raise ConfigError(f"{path} does not define {', '.join(missing)}")
    return Definitions(tuple(module.ENTITIES), tuple(module.VIEWS), tuple(module.SERVICES), name)
