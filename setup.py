"""mambaseg_ros: an ament_python package (colcon) that is also a pip package.

Version ranges live here; exact pins live only in constraints.txt.
"""

import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "mambaseg_ros"
HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "mambaseg_core" / "__init__.py").read_text()).group(1)

# Runtime requirements (the ROS 2 Python packages come from ROS itself or the PyPI ros-* wheels
# that `make` installs; they are not pip requirements of this package).
INSTALL_REQUIRES = [
    "numpy>=1.26",
    "torch>=2.4",
    "PyYAML>=6.0",
    "h5py>=3.8",
    "hdf5plugin>=4.1",
    "opencv-python-headless>=4.8",
    "pillow>=9.5",
    "numba>=0.60",
    "tqdm>=4.60",
    "rosbags>=0.10",
]
EXTRAS_REQUIRE = {
    "cuda": ["mamba-ssm>=2.2"],
    "train": ["tensorboard>=2.15"],
    "dev": [
        "pytest>=8",
        "hypothesis>=6.100",
        "evt3>=0.4",  # the reference EVT3 decoder: a test oracle and a benchmark row only
        "ruff>=0.6",
        "mypy>=1.10",
        "mcap>=1.1",
        "mcap-ros2-support>=0.5",
        "colcon-common-extensions>=0.3",  # `make test` builds the package with colcon
    ],
}

# Executables: the node goes where `ros2 run` finds it (setup.cfg), the CLIs onto PATH as well.
CONSOLE_SCRIPTS = [
    "mambaseg_node = mambaseg_ros.node:main",
    "mambaseg_demo = mambaseg_ros.demo:main",
    "mambaseg-info = mambaseg_core.cli.info:main",
    "mambaseg-train = mambaseg_core.cli.train:main",
    "mambaseg-eval = mambaseg_core.cli.eval:main",
    "mambaseg-prepare-dsec = mambaseg_core.cli.prepare_dsec:main",
    "mambaseg-check-data = mambaseg_core.cli.check_data:main",
    "mambaseg-make-fixtures = mambaseg_core.cli.make_fixtures:main",
    "mambaseg-simulate-events = mambaseg_core.cli.simulate_events:main",
    "mambaseg-bag = mambaseg_ros.bag_cli:main",
]


def data_files():
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
    ]
    for folder in sorted({str(Path(p).parent) for p in glob("config/**/*.*", recursive=True)}):
        files.append((f"share/{PACKAGE}/{folder}", sorted(p for p in glob(f"{folder}/*.*") if Path(p).is_file())))
    return files


setup(
    name=PACKAGE,
    version=VERSION,
    description="Real-time image + event-camera semantic segmentation (MambaSeg) for ROS 2",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mambaseg_core", "mambaseg_core.*", "mambaseg_ros", "mambaseg_ros.*"]),
    package_data={"mambaseg_core": ["ops/selective_scan/csrc/*"]},
    data_files=data_files(),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    zip_safe=False,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
