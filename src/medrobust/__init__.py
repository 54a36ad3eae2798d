"""medrobust: attack and defend medical image classifiers, every experiment tracked in MLflow."""

__version__ = "0.1.0"
