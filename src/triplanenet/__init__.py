"""triplanenet: single-photo 3D head inversion into EG3D with TriPlaneNet, in pure PyTorch."""

__version__ = "0.1.0"
