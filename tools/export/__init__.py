"""Export: merge a run's adapter into its base, checked by logits (`export`, `logits`, `runs`), and
merge several adapters into a new run (`merge`: PEFT's methods, mergekit's). `python -m tools.export
--help`; `python -m tools.export.merge --help`. Imports the core."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(["export_run", "main"], "export"),
        **dict.fromkeys(["Refused", "run_info"], "runs"),
        "CheckFailed": "logits",
        **dict.fromkeys(["merge_adapters", "merge_models"], "merge"),
        "export_pruned": "pruned",
        "pruned_main": "pruned:main",
        **dict.fromkeys(["export_gguf", "gguf_dir"], "gguf"),
        "gguf_main": "gguf:main",
    },
)
