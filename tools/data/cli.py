"""Select N rows from a pool, split the curriculum, register the datasets for LLaMA-Factory.

Usage:
    python -m tools.data [--source demo|hw5|<file>|<hub name>] [--strategy hw5_default] [--n 100]
                         [--all-strategies] [--eval demo|hw5|<file>] [--name NAME] [--eval-name NAME]
                         [--thresholds 50,120] [--curriculum-by STRATEGY] [--near-dup 0.5] [--seed 0]
                         [--ifd-candidates K] [--shape alpaca|sharegpt|openai|prompt] [--force]
                         [--embedding auto|minilm|hashed] [--diversity-prefilter hw5_default|none]
                         [--diversity-candidates K] [--length-window 100,400]
    python -m tools.data --remove UNIT     # unregister a unit (a set with its stages) and delete its files

Sources: `demo` (built from Python's own documentation, see plugins/pools/demo_pool.py), `hw5` (Long-Is-More's
two Alpaca 1k files merged, duplicates dropped), `alpaca_52k` (HW5's 52k pool), a JSON
or JSONL file in any supported shape, or a hub name (`tatsu-lab/alpaca`) through `datasets`. HW5's files
are found by tools/data/sources.py: the cache `make fetch-hw5` fills, then --data-dir, then ../shared/data.
The subset is always registered as `alpaca_top<N>` (+ `_easy|_medium|_hard`), whatever the pool;
`--all-strategies` adds `alpaca_top<N>_by_<strategy>` for the data study, and `alpaca_top<N>_by_<name>`
for each named selection in the study specs' `selections:` blocks (quota compositions such as
`quota:60*length_window,20*complexity,20*diversity`: plugins/selection/quota.py; `--strategy` takes one directly). `--eval hw5` registers
`hw5_test` (HW5's 150 prompts, references joined by id from Long-Is-More), `--eval demo` the shipped
`demo_eval`. Files go to data/generated/<name>/ (manifest and plot beside the subset), published as
one unit (plugins.publishing.publish), so a kill leaves the old set or the new one. The stages are thirds by rank
of difficulty (never empty); `--thresholds 50,120` is HW5's cut by value, refused (exit 2) when it would
empty a stage. Ties in every strategy are broken by id.

Exit status 2 on bad input (a pool or name that cannot be used), with one message naming the file,
the row or line and the field; nothing is written then.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from filelib import atomic_write_json, run_main, sha256_file, sha256_text
from plugins.pools import DataError, Table, load_table, merge_tables, normalise_records
from plugins.publishing import pipeline, publish, registry
from plugins.selection import STAGES, STUDY_STRATEGIES, Context, curriculum, leakage, parse_thresholds
from tools.core.args import command, opt
from tools.core.hub import go_offline, hub_offline, hub_reachable
from tools.core.paths import DATA, TEMPLATES, cache_dir
from tools.data.derived import check_name
from tools.data.guard import describe, drop_leaked, guard_sets
from tools.data.sources import EMBEDDED, check_model, locate, source_files

# --source name -> the named source it reads (tools/data/sources.py)
POOLS = {"hw5": "alpaca_2k", "alpaca_52k": "alpaca_52k"}
SHAPES = ("alpaca", "sharegpt", "openai", "prompt")
DEV_N = 150  # hw5_dev: as many prompts as the test set, so a dev mean is as precise as a test mean


def say(msg: str) -> None:
    print(f"data: {msg}", flush=True)


def load_source(
    spec: str, shape: str | None = None, shared: Path | None = None
) -> tuple[list[dict], dict, list]:
    """Rows, the manifest's source block, and the rows to write first (the demo pool file)."""
    if spec == "demo":
        from plugins.pools import demo_pool

        records = demo_pool.build()
        t = normalise_records(records, Path("demo_pool.json"), "alpaca", require_answer=True)
        src = {"kind": "demo", "spec": spec, "python_docs": sys.version.split()[0]}
        src["files"] = [{"path": "data/generated/demo_pool.json", "sha256": None}]  # set once written
        return t.rows, src | {"rows": len(t.rows), "duplicates_dropped": len(t.duplicates)}, records
    if spec in POOLS:  # `shared`: a folder the user names (--data-dir), searched after the cache
        found = locate(POOLS[spec], shared)
        tables = [load_table(f.path, shape, require_answer=True) for f in found]
        rows, dups = merge_tables(tables)
        files = [f.manifest() for f in found]
        src = {
            "kind": spec,
            "spec": spec,
            "files": files,
            "rows": len(rows),
            "duplicates_dropped": len(dups),
        }
        return rows, src | {"duplicates": dups[:50]}, []
    path = Path(spec)
    if path.exists() or path.suffix in (".json", ".jsonl") or "/" not in spec:
        t: Table = load_table(path, shape, require_answer=True)
        src = {"kind": "file", "spec": spec, "files": [{"path": str(path), "sha256": sha256_file(path)}]}
        return t.rows, src | {"rows": len(t.rows), "duplicates_dropped": len(t.duplicates)}, []
    return _load_hub(spec, shape)


def _load_hub(name: str, shape: str | None) -> tuple[list[dict], dict, list]:
    if hub_offline() or not hub_reachable():
        # offline: a copy in the local cache still loads; anything else fails at once, not after retries
        go_offline()
    try:
        import datasets

        records = datasets.load_dataset(name, split="train").to_list()
    except Exception as e:  # offline, unknown name, no permission: all end the same way for the user
        raise DataError(
            f"{name}: could not load it from the Hugging Face hub ({type(e).__name__}: {str(e)[:160]}); "
            "without internet, download the file elsewhere and pass it: --source path/to/file.json"
        ) from None
    t = normalise_records(records, Path(name.replace("/", "__")), shape, require_answer=True)
    src = {
        "kind": "hub",
        "spec": name,
        "files": [{"path": f"hf://{name}", "sha256": sha256_text(repr(records))}],
    }
    return t.rows, src | {"rows": len(t.rows), "duplicates_dropped": len(t.duplicates)}, []


def eval_rows(
    spec: str, shape: str | None, shared: Path | None = None
) -> tuple[str, list[dict], Path | None, str]:
    """(name, rows, committed file or None, note) of an evaluation set."""
    if spec == "demo":
        path = DATA / "demo_eval.json"
        return "demo_eval", load_table(path, shape).rows, path, "the prompts this project ships"
    if spec == "hw5":
        prompts = load_table(source_files("hw5", shared)[0], "prompt").rows
        refs_file = source_files("hw5_refs", shared)[0]
        refs = {r["id"]: r["output"] for r in load_table(refs_file, "sharegpt").rows[:150]}
        for r in prompts:
            r["output"] = refs.get(r["id"], "")
        missing = sum(1 for r in prompts if not r["output"])
        return (
            "hw5_test",
            prompts,
            None,
            f"{len(prompts) - missing} with a reference joined by id, {missing} without",
        )
    t = load_table(Path(spec), shape or "prompt")
    missing = sum(1 for r in t.rows if not r["output"])
    note = f"{len(t.rows) - missing} with a reference, {missing} without"
    if t.duplicates:  # an evaluation set that shrinks must say so: its n is part of every score
        rows = ", ".join(f"{d['row']} (= {d['duplicate_of']})" for d in t.duplicates[:5])
        note += f"; WARNING: {len(t.duplicates)} duplicate prompt(s) dropped, rows {rows}"
    renamed = [r["id"] for r in t.rows if "#" in r["id"]]
    if renamed:
        note += f"; WARNING: {len(renamed)} reused id(s) renamed ({', '.join(renamed[:5])})"
    return Path(spec).stem, t.rows, None, note


def study_selections(studies: Path = TEMPLATES / "studies") -> dict[str, str]:
    """Named selections the study specs declare (`selections: {name: strategy}`), for --all-strategies."""
    import yaml

    out: dict[str, str] = {}
    for path in sorted(studies.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        for name, strategy in (spec.get("selections") or {}).items():
            if out.get(name, strategy) != strategy:
                raise DataError(
                    f"{path}: selection {name!r} is {strategy!r} here and {out[name]!r} elsewhere"
                )
            out[name] = strategy
    return out


def dev_rows(
    spec: str, test_rows: list[dict], shared: Path | None = None, n: int = DEV_N
) -> tuple[str, list[dict], Path | None, str] | None:
    """The dev set beside a test set (choices are made on it, never on the test set): for `hw5`,
    Long-Is-More's Evol-Instruct rows after HW5's 150 (the same source, with references), for `demo`
    the shipped data/demo_dev.json. Disjoint from the test set by id and by text, or an error."""
    if spec == "demo":
        path = DATA / "demo_dev.json"
        name, rows, file, note = "demo_dev", load_table(path).rows, path, "the dev prompts this project ships"
    elif spec == "hw5":
        pool = load_table(source_files("hw5_refs", shared)[0], "sharegpt").rows[150:]
        rows = [r for r in pool if r["output"]][: n or None]
        name, file, note = (
            "hw5_dev",
            None,
            f"Long-Is-More Evol-Instruct rows after HW5's 150 (first {len(rows)})",
        )
    else:
        return None
    clash = leakage.check(rows, {"test": test_rows})
    ids = {r["id"] for r in test_rows} & {r["id"] for r in rows}
    if ids or clash:
        raise DataError(
            f"dev set {name} is not disjoint from its test set: shared ids {sorted(ids)[:5]}, "
            f"shared prompts {[(c['id'], c['eval_id'], c['kind']) for c in clash[:5]]}"
        )
    return name, rows, file, note + "; disjoint from the test set by id, text and 8-word runs"


def warn_leakage(manifest: dict) -> None:
    leak = manifest.get("leakage") or {}
    if leak.get("overlaps"):
        shown = ", ".join(f"{o['id']}~{o['set']}:{o['eval_id']} ({o['kind']})" for o in leak["overlaps"][:8])
        more = len(leak["overlaps"]) - 8
        say(
            f"warning: leakage: {leak['n_overlapping_rows']} row(s) of {manifest['name']} repeat a dev/test "
            f"prompt: {shown}{f' and {more} more' if more > 0 else ''} (recorded in its manifest)"
        )


@dataclass
class DataArgs:
    """Every option of `tools.data`, each default, help and rule once (tools.core.args)."""

    source: str | None = opt(
        None, help="demo | hw5 | alpaca_52k | <file> | <hub name> (demo unless only --eval)"
    )
    strategy: str = opt("hw5_default", help="a strategy or name:weight,name:weight")
    n: int = opt(100, help="rows in the subset", min=1)
    name: str | None = opt(None, help="subset name (default alpaca_top<N>)")
    all_strategies: bool = opt(False, help="also register alpaca_top<N>_by_<strategy>")
    strategies: str | None = opt(None, help="comma-separated list for the data study (default: all)")
    eval: list[str] = opt([], help="demo | hw5 | <prompt file> (repeatable)", repeat=True)
    eval_name: str | None = opt(None, help="registered name for an --eval <file> (default: the file's stem)")
    dev_n: int = opt(DEV_N, help="hw5_dev prompts (0 = all 850)", nonneg=True)
    thresholds: str | None = opt(
        None, help="HW5's cut by answer words, e.g. 50,120 (default: thirds by rank)"
    )
    curriculum_by: str | None = opt(None, help="split the stages by thirds of this strategy's ranks instead")
    near_dup: float | None = opt(None, help="skip rows sharing more than this Jaccard share, e.g. 0.5")
    seed: int = opt(0, help="the seed of random choices", nonneg=True)
    shape: str | None = opt(None, help="the pool's shape (default: detected)", choices=SHAPES)
    ifd_candidates: int | None = opt(
        None, help="IFD on the top K by --ifd-prefilter (default: 3N on CPU, all on GPU)", min=1
    )
    ifd_prefilter: str = opt("hw5_default", help="the strategy that picks IFD's candidates")
    ifd_max_tokens: int | None = opt(None, help="tokens per sequence (default 512 on GPU, 256 on CPU)", min=1)
    embedding: str = opt(
        "auto", help="diversity: minilm | hashed (fallback) | auto", choices=("auto", "minilm", "hashed")
    )
    diversity_prefilter: str = opt("hw5_default", help="quality first (DEITA); none = all")
    diversity_candidates: int | None = opt(
        None, help="rows the diversity pass sees (default 20N, >= 2000)", min=1
    )
    length_window: list[int] | None = opt(
        None,
        help="length_window: answer words lo,hi (default 100,400)",
        split=",",
        nonneg=True,
        metavar="LO,HI",
    )
    model: Path = opt(EMBEDDED, help="tokenizer/LM for long_is_more and IFD")
    dataset_dir: Path = opt(DATA, help="the folder holding dataset_info.json")
    shared: Path | None = opt(
        None,
        help="a folder with HW5's files (see make fetch-hw5)",
        flag=("--data-dir", "--shared"),
        metavar="DIR",
    )
    plot: bool = opt(True, help="no figures")
    force: bool = opt(False, help="replace a user's registry entry of the same name")
    keep_leaked: bool = opt(
        False,
        help="keep pool rows that repeat a dev/test prompt (dropped by default; flagged in the manifest)",
    )
    remove: str | None = opt(
        None, help="unregister a data set unit and delete its generated files, then stop", metavar="UNIT"
    )

    def check(self) -> list[str]:
        out = []
        if self.near_dup is not None and not 0 < self.near_dup <= 1:
            out.append(f"--near-dup {self.near_dup}: outside (0, 1]: it is a share of shared words, e.g. 0.5")
        lw = self.length_window
        if lw is not None and (len(lw) != 2 or lw[0] > lw[1]):
            out.append(
                f"--length-window {','.join(map(str, lw))}: write lo,hi answer words, lo <= hi, e.g. 100,400"
            )
        return out


def run(a: DataArgs) -> int:
    ddir = Path(a.dataset_dir)
    if a.remove:
        gone = publish.remove(ddir, a.remove)
        say(f"removed: {a.remove}: {', '.join(gone) or 'no registry entries'} (and its generated files)")
        return 0
    ctx = Context(
        seed=a.seed,
        n=a.n,
        model=a.model,
        cache_dir=cache_dir() / "ifd",
        ifd_candidates=a.ifd_candidates,
        ifd_prefilter=a.ifd_prefilter,
        ifd_max_tokens=a.ifd_max_tokens,
        progress=True,  # a bar on a terminal, lines in a log (plugins.selection.progress)
        embedding=a.embedding,
        diversity_prefilter=a.diversity_prefilter,
        diversity_candidates=a.diversity_candidates,
    )
    if a.length_window:
        ctx.length_window = tuple(a.length_window)
    ctx.notes["near_dup"] = a.near_dup
    for flag, value in (("--name", a.name), ("--eval-name", a.eval_name)):
        if value is not None:
            check_name(value, flag)
    thresholds = parse_thresholds(a.thresholds)
    source = a.source or (None if a.eval else "demo")
    name = a.name or f"alpaca_top{a.n}"
    study: dict[str, str] = {}  # dataset suffix -> strategy
    if source and (a.all_strategies or a.strategies):
        named = study_selections()
        picked = a.strategies.split(",") if a.strategies else [*STUDY_STRATEGIES, *named]
        study = {s: named.get(s, s) for s in picked}
    strategies = [a.strategy, *study.values()] + ([a.curriculum_by] if a.curriculum_by else [])
    if source and (used := pipeline.needs_model(strategies, a.ifd_prefilter, a.diversity_prefilter)):
        check_model(a.model, used)
    evals = [(e, eval_rows(e, None, a.shared)) for e in a.eval]
    if a.eval_name and len(evals) == 1 and a.eval[0] not in ("demo", "hw5"):
        evals = [(evals[0][0], (a.eval_name, *evals[0][1][1:]))]
    for spec, e in evals:
        check_name(e[0], f"--eval {spec} (its file name; pick one with --eval-name)")
    devs = [(spec, d) for spec, e in evals if (d := dev_rows(spec, e[1], a.shared, a.dev_n))]
    dev_names = {d[0] for _, d in devs}
    evals += devs
    registry.check_conflicts({e[0]: ("eval", e[0]) for _, e in evals}, ddir, a.force)
    guard = guard_sets(ddir, {e[0]: e[1] for _, e in evals})
    if source:
        rows, src, pool_file = load_source(source, a.shape, a.shared)
        say(f"load: {source}: {src['rows']} rows, {src['duplicates_dropped']} duplicates dropped")
        rows, leak = drop_leaked(rows, guard, a.keep_leaked)  # before any choice is made from them
        if line := describe(leak, f"the {source} pool"):
            say(line)
        ctx.notes["leak_guard"] = leak
        claims = {name: ("train", name), **{f"{name}_{s}": ("stage", name) for s in STAGES}}
        claims.update({f"{name}_by_{s}": ("train", f"{name}_by_{s}") for s in study})
        claims.update({e[0]: ("eval", e[0]) for _, e in evals})
        pipeline.plan(len(rows), a.n, strategies, claims, ddir, a.force)
        ctx.notes["leakage_sets"] = guard
        sel = pipeline.select(rows, name, a.strategy, a.n, ctx, a.near_dup)
        say(f"select: {a.strategy}: top {a.n} of {len(rows)} in {sel.seconds:.2f} s; knee at rank {sel.knee}")
        # the split may refuse (thresholds that empty a stage): before anything is written
        parts = pipeline.split_stages(rows, sel, ctx, thresholds, a.curriculum_by)
        if pool_file:
            pool_path = atomic_write_json(ddir / "generated" / "demo_pool.json", pool_file)
            src["files"][0]["sha256"] = sha256_file(pool_path)
        m = pipeline.write_subset(
            rows, sel, ddir, src, ctx, True, thresholds, a.curriculum_by, a.plot, a.force, parts
        )
        warn_leakage(m)
        how = (
            f"thirds by {a.curriculum_by}"
            if a.curriculum_by
            else f"answer words {thresholds[0]}/{thresholds[1]}, code or math hard"
            if thresholds
            else "thirds by rank: code or math hardest, then answer words"
        )
        say(f"curriculum: {curriculum.word_ranges(parts)} ({how})")
        empty = [st for st, part in parts.items() if not part]
        if empty:  # only fewer than 3 rows can leave a stage empty now
            say(
                f"warning: stage {', '.join(empty)} is empty (LLaMA-Factory cannot train on an empty dataset); "
                "select at least 3 rows for the curriculum study"
            )
        say(
            f"register: {name}, {name}_easy|medium|hard -> {ddir / 'generated' / name} ({m['files'][name]['sha256'][:12]})"
        )
        for s, strategy in study.items():
            sub = pipeline.select(rows, f"{name}_by_{s}", strategy, a.n, ctx, a.near_dup)
            sm = pipeline.write_subset(rows, sub, ddir, src, ctx, False, plot=a.plot, force=a.force)
            warn_leakage(sm)
            extra = ""
            if "ifd" in sub.weights and "ifd" in ctx.notes:
                n = ctx.notes["ifd"]
                extra = f" (IFD on {n['candidates']} of {n['pool']} rows, {n['cache_hits']} from cache)"
            say(f"study: {name}_by_{s}: {strategy} in {sub.seconds:.2f} s{extra}")
    for spec, (ename, erows, file, note) in evals:
        role = "dev" if ename in dev_names else "test"
        path = pipeline.write_eval(erows, ename, ddir, spec, a.force, file, role)
        say(f"{role}: {ename}: {len(erows)} prompts, {note} -> {path}")
    return 0


@command(DataArgs, __doc__)
def main(a: DataArgs) -> int:
    try:
        return run(a)
    except (DataError, registry.RegistryError) as e:
        print(f"data: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    run_main(main)
