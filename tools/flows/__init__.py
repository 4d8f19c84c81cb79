"""Orchestration, the layer above the stages: the sweep (render, preflight, train every run, then its
evaluation, the choice on dev, the test score and the report: `sweep`, `evaluation`, `preflight`), the
demo (`demo`: the whole study on the embedded model) and the recovery demo (`recovery_demo`).

Each imports the stages it drives through their faces and starts their tools from the imported `main`
(a child process where memory must be given back between steps), so the import graph is the one that
runs. Nothing below imports this package.
"""
