"""The registry port and its adapters. The only package that imports mlflow.

``registry.port`` declares what the rest of driftloop needs from a model
registry; ``registry.mlflow_registry`` implements it on MLflow (sqlite by
default, a tracking server when configured); ``registry.memory`` is the
in-memory adapter (registry/memory.py) for the backtest and as the unit tests' fake. One
contract test suite runs against both.
"""

from registry.port import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    ALIAS_PREVIOUS,
    ANY,
    TAG_PREFIX,
    AliasConflict,
    DecisionRecord,
    ModelRegistry,
    NewVersion,
    RegistryError,
    RegistryUnavailable,
    VersionInfo,
    VersionNotFound,
)

__all__ = [
    "TAG_PREFIX", "ALIAS_CHALLENGER", "ALIAS_CHAMPION", "ALIAS_PREVIOUS", "ANY", "AliasConflict",
    "DecisionRecord", "ModelRegistry", "NewVersion", "RegistryError", "RegistryUnavailable",
    "VersionInfo", "VersionNotFound", "open_registry",
]


def open_registry(settings: object) -> ModelRegistry:
    """The MLflow registry the settings point at (``kernel.settings.CommonSettings``)."""
    from registry.mlflow_registry import MlflowRegistry

    return MlflowRegistry.from_settings(settings)
