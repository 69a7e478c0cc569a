"""Old module names kept working after the package was grouped by stage (``faceage.policy`` ->
``faceage.checks.policy``, ``faceage.agecheck`` -> ``faceage.checks.fitting``), with a DeprecationWarning."""
import importlib
import warnings


def forward(old: str, new: str):
    """``(__all__, __getattr__)`` for the module ``old``, which now lives at ``new``; warns the importer."""
    warnings.warn(f"{old} is now {new}; the old name goes in 0.3", DeprecationWarning, stacklevel=3)
    module = importlib.import_module(new)

    def attribute(name: str):
        return getattr(module, name)

    return [name for name in vars(module) if not name.startswith("_")], attribute
