"""Feast objects of the fraud domain, generated from the declarations in ``specs.py``.

The stock ``feast`` CLI imports this module and finds the objects as module globals;
``skewless features apply`` builds the same objects through ``build``.
"""

from __future__ import annotations

from feature_repo.specs import ENTITIES, SERVICES, VIEWS
from skewless.features.feast_objects import build
from skewless.settings import load_settings

OBJECTS = build(ENTITIES, VIEWS, SERVICES, load_settings().lake_path)
globals().update(OBJECTS)
