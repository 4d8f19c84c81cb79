"""Evaluation: prompt sets (`prompts`), where a model comes from (`source`), the LLaMA-Factory-loaded
engine (`engine`), answers per decoding point (`generate`, `decoding`) or per prompt type (`policy`) and automatic metrics
(`metrics`). Imports the core and `plugins/` (dataset registry and loaders)."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(
            ["GenerateError", "load_prompts", "prompt_rows", "resolve_dataset", "user_message"], "prompts"
        ),
        **dict.fromkeys(["Source", "resolve_source"], "source"),
        **dict.fromkeys(["Engine", "peak_mem_mb", "auto_batch_size", "default_dtype", "CPU_DTYPE"], "engine"),
        **dict.fromkeys(["Study", "evaluate_study", "study_runs"], "study"),
        "study_main": "study:main",
        "recovery_main": "recovery:main",
        **dict.fromkeys(["generate", "generate_point", "partial_path", "sidecar_path"], "generate"),
        **dict.fromkeys(["DecodingPoint", "load_grid", "grid_names"], "decoding"),
        **dict.fromkeys(["Policy", "classify", "load_policy", "policy_names", "is_policy"], "policy"),
        **dict.fromkeys(["rouge_items", "perplexity", "compute"], "metrics"),
        **dict.fromkeys(["evaluate_run", "stages_of"], "recovery"),
        **dict.fromkeys(["zero_shot", "check_tasks", "expand", "LOCAL_TASKS", "STANDARD_TASKS"], "zeroshot"),
    },
)
