"""Reports: collect a study's runs (`collect`, `events`), tables and verdicts (`table`), plots,
TensorBoard HParams (`hparams`) and the pages (`render`, `build`). `python -m tools.report --help`.
`synthetic` writes run folders with known numbers, for tests and benchmarks. Imports the core."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(["build_report", "main"], "build"),
        "build_recovery_report": "recovery",
        **dict.fromkeys(
            ["metrics", "scores", "write_run", "write_events", "standard_series", "curve"], "synthetic"
        ),
    },
)
