"""Training: render study specs into airtight LLaMA-Factory YAML (`configs`, `template`, `validate`),
train one run resumably (`trainer`) and record its cost (`trainstats`), a run as a Ray task
(`ray_runner`), the checks before a sweep spends anything (`preflight`, with the memory bill of
`memory`), and the one-run smoke test (`smoke`). The sweep that drives these is orchestration
(`tools.flows`). Imports the core, `tools.models` and `plugins/`."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(
            ["COMMITTED_PROFILES", "Rendered", "check", "list_studies", "load_study"]
            + ["render_all", "render_run", "render_study", "skipped_variants", "write_rendered"],
            "configs",
        ),
        "validate_config": "validate",
        **dict.fromkeys(["yaml_scalar", "parse_set", "set_problems"], "template"),
        **dict.fromkeys(["train_one", "last_checkpoint", "resume_point", "config_hash"], "trainer"),
        **dict.fromkeys(["PreflightError", "Report", "device_info", "model_config"], "preflight"),
        "preflight_check": "preflight:check",
        "run_jobs": "ray_runner",
        "ray_cluster": "ray_runner:connect",
        "ray_note": "ray_runner:where_note",
        "PlacementError": "placement",
        **dict.fromkeys(["bill", "disk_mb", "render_bill"], "memory"),
        **dict.fromkeys(["run_stats", "trainable_params", "train_command"], "trainstats"),
    },
)
