"""Refinement: rewrite the selected rows through any OpenAI-compatible endpoint (answers more detailed,
instructions evolved, reasoning added), with the judge's client, cache, cost estimate and cost limit,
into a new registered dataset. `python -m tools.refine --help`. Imports the core, `tools.data` (datasets
in and out) and `tools.judge` (the endpoint client, its cache and prices)."""

from tools.core.face import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        **dict.fromkeys(["RewritePrompt", "RefineError", "load_prompt"], "prompts"),
        **dict.fromkeys(["refine", "main"], "refine"),
    },
)
