"""Package discovery for the design-card layout.

The top-level folders ``labqfl/``, ``drivers/``, ``gui/``, ``calibration/`` and ``sim_backends/``
are installed as ``labqfl``, ``labqfl.drivers``, ``labqfl.gui``, ``labqfl.calibration`` and
``labqfl.sim_backends`` (no generic top-level names land in site-packages). Everything else is in
``pyproject.toml``.
"""

from setuptools import find_packages, setup

NAMESPACE = {
    "labqfl": "labqfl",
    "labqfl.drivers": "drivers",
    "labqfl.gui": "gui",
    "labqfl.calibration": "calibration",
    "labqfl.sim_backends": "sim_backends",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for name, folder in NAMESPACE.items():
    package_dir[name] = folder
    packages.append(name)
    for sub in find_packages(folder):
        full = f"{name}.{sub}"
        if not any(full == k or full.startswith(k + ".") for k in NAMESPACE if k != name and k.startswith(name + ".")):
            packages.append(full)
            package_dir[full] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
