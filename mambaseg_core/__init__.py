"""MambaSeg core: model, selective scan, event pipeline, data, training. Never imports ROS."""

__version__ = "0.1.0"
