"""Reports: collect a study's runs (`collect`, `events`), the choice made on the dev set (`choose`), the
decision and the random floor with paired intervals (`decision`), tables and verdicts (`table`), plots,
TensorBoard HParams (`hparams`) and the pages (`render`, `build`). `python -m tools.report --help`.
`synthetic` writes run folders with known numbers, for tests and benchmarks. Imports the core."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(["build_report", "main"], "build"),
        "build_recovery_report": "recovery",
        "recovery_report_main": "recovery:main",
        **dict.fromkeys(
            ["Choice", "choose_on_dev", "dev_records", "item_scores", "record_choice", "role_of"], "choose"
        ),
        **dict.fromkeys(["decide", "random_floor"], "decision"),
        **dict.fromkeys(
            ["metrics", "scores", "write_run", "write_events", "standard_series", "curve"], "synthetic"
        ),
        **dict.fromkeys(
            [
                "Objective",
                "objective_of",
                "epoch_values",
                "epoch_steps",
                "write_tune_report",
                "planned_steps",
            ],
            "trials",
        ),
    },
)
