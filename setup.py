"""Package discovery for the one thing pyproject.toml cannot say declaratively.

The repository keeps its role folders at the top level (``events/``, ``services/``,
``workers/``) but installs them under one import name that belongs to this project alone:
``oauthledger.events``, ``oauthledger.services``, ``oauthledger.workers`` (``oauthledger``
itself is a namespace package). setuptools' ``packages.find`` reports names relative to
the folder it searches, so it cannot add the prefix; this file finds every package below
each role folder and maps it, so a new subpackage can never be left out of the wheel.
Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

ROLE_FOLDERS = ("events", "services", "workers")

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder in ROLE_FOLDERS:
    package_dir[f"oauthledger.{folder}"] = folder
    packages.append(f"oauthledger.{folder}")
    packages += [f"oauthledger.{folder}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages, package_dir=package_dir)
