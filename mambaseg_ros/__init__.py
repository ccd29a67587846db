"""ROS 2 glue for mambaseg_core: message conversions and the segmentation node."""
