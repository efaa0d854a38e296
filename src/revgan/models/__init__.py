"""Training objectives (one class per objective; 3D is the same class with ``dims=3``) and
the registry that names them."""

from revgan.models.base import BaseModel
from revgan.models.registry import (
    MODELS,
    ModelSpec,
    build_config,
    create_model,
    generator_kind,
    model_spec,
)

__all__ = ["BaseModel", "MODELS", "ModelSpec", "build_config", "create_model",
           "generator_kind", "model_spec"]
