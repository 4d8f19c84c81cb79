"""The judge, FastChat `llm_judge`-style: protocols as data (`protocol`), the OpenAI-compatible client
(`client`), the append-only cache (`cache`), cost (`cost`), parsing (`parse`), statistics (`stats`),
the offline judge (`offline`), a local server (`serve`) and the run that ties them (`run`, `cli`);
HW5's submission file (`submit`), reference provenance (`references`), the length-controlled score
(`length`), two judges' agreement (`agree`), the progress bar (`progress`).
`python -m tools.judge --help`. Imports the core."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(["run_judge", "compare_runs", "answer_scores", "main"], "cli"),
        **dict.fromkeys(["Endpoint", "Task", "CallStats", "call_all", "run_tasks"], "client"),
        **dict.fromkeys(["Protocol", "ProtocolError", "load_protocol"], "protocol"),
        **dict.fromkeys(["bootstrap_ci", "paired_difference", "summary"], "stats"),
        **dict.fromkeys(["JudgeError", "JudgeSpec", "api_spec", "endpoint_spec"], "run"),
        **dict.fromkeys(["cost_usd", "messages_tokens", "price_of"], "cost"),
        "JudgeCache": "cache",
        **dict.fromkeys(["length_controlled"], "length"),
        **dict.fromkeys(["agreement", "winner_agreement"], "agree"),
        "build_submission": "submit",
        **dict.fromkeys(["read_references", "provenance"], "references"),
        "OfflineJudge": "offline",
    },
)
