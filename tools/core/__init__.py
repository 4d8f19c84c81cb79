"""The core every stage stands on: where a run's files live (`paths`), what a run was (`runinfo`),
model profiles (`profiles`), a block's output sent to a log (`streams`), the
Hugging Face hub offline or out of reach (`hub`), the thread count OMP_NUM_THREADS asks for (`threads`). It
imports nothing from the stage packages."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(
            ["ROOT", "DATA", "MODELS", "TEMPLATES", "EXPERIMENTS", "Run", "cache_dir", "exports_dir"]
            + [
                "llamafactory_cli",
                "out_root",
                "report_dir",
                "reports_dir",
                "runs_of_study",
                "saves_dir",
                "study_dir",
            ]
            + ["venv_bin"],
            "paths",
        ),
        **dict.fromkeys(
            ["ChildResult", "data_fingerprint", "git_commit", "now", "package_versions", "run_child"],
            "runinfo",
        ),
        **dict.fromkeys(
            ["ConfigError", "list_profiles", "load_profile", "load_yaml", "resolve_model_path", "same_model"],
            "profiles",
        ),
        "streams_to": "streams",
        **dict.fromkeys(["go_offline", "hub_offline", "hub_reachable"], "hub"),
    },
)
