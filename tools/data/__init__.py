"""The data stage's command lines: load a pool, select, split the curriculum and register (`cli`,
`python -m tools.data`), through `plugins/` (which does the work on LLaMA-Factory's side); datasets
derived from a registered one (`derived`), such as a general-data mix (`mix`, `python -m tools.data.mix`);
HW5's named sources found on disk (`sources`: the cache, a named folder, ../shared/data) and fetched into the
cache (`fetch`, `python -m tools.data.fetch`, `make fetch-hw5`)."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(["load_source", "eval_rows", "study_selections", "main"], "cli"),
        **dict.fromkeys(["check_name", "publish", "registered_rows"], "derived"),
        "register_recovery_data": "recovery",
        "recovery_main": "recovery:main",
        **dict.fromkeys(["locate", "source_files", "data_root", "cache_root", "shared_root"], "sources"),
        "fetch_hw5": "fetch:fetch",
        "fetch_main": "fetch:main",
    },
)
