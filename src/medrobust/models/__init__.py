"""Model zoo (a name picks a factory) and the training loop."""

from .zoo import ARCHITECTURES, backbone, create_model

__all__ = ["ARCHITECTURES", "backbone", "create_model"]
