"""The product's docs stay user guides: word counts, the model zoo's sections, no work-log words, small artifacts.

Word counts are ``len(text.split())`` (what ``wc -w`` counts). The forbidden patterns describe how a work log
reads (work sessions, tracker numbers and tags, development-machine paths, first-person run notes); they are
checked in every product file, in Python files over comments and string literals only (names in code are free).
"""

from __future__ import annotations

import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest
from conftest import REPO

#: at most this many words (the model zoo's bundle docs run to about 1,000-1,400)
MAX_WORDS: dict[str, int] = {
    "README.md": 1500,
    "bundles/vae_baseline/docs/README.md": 1500,
    "bundles/dipvae/docs/README.md": 1500,
    "bundles/latent_ode/docs/README.md": 1500,
    "bundles/tumour_seg/docs/README.md": 1500,
}

#: the model zoo's sections, in this order, in every bundle's docs/README.md
ZOO_SECTIONS: list[str] = [
    "Model Overview",
    "Data",
    "Training configuration",
    "Performance",
    "MONAI Bundle Commands",
    "References",
    "License",
]

#: docs that a rewrite under way has not brought to the rules yet: strict xfail, so the entry must go once it passes
PENDING_REWRITE: dict[str, str] = {}

#: pattern -> what it catches. Case-insensitive unless the pattern says otherwise.
FORBIDDEN: dict[str, str] = {
    r"\bsessions?\b": "work sessions",
    r"\bissues?\s*#?\d+": "tracker issue numbers",
    r"\b(?:the|this) issue'?s\b": "the tracker's wording ('the issue's bar')",
    r"(?-i:(?<![\w.])[sS]\d{1,2}\b)": "tracker tags such as s4 or S7",
    r"_s\d+\b": "run names carrying a tracker tag (h100_128_s2, demo_s8)",
    r"\bdemo_(?:cpu|gpu)\d+\b": "names of past run folders",
    r"\bstop \d+\b": "tracker stops",
    r"(?<!colour )(?<!color )(?<!colour-)(?<!progress )(?<![\"'])\bbars?\b(?![\"'])": "the tracker's 'bars'",
    r"\bhelpers?\b": "the development process's helpers",
    r"\b(?:TODO|FIXME|XXX)\b": "open work markers",
    r"\bdiary\b|\b(?:work )?tracker\b": "the work log itself",
    r"(?:^|[\s`'\"(=])/(?:work|tmp|opt|home|root|mnt|Users)/": "development-machine paths",
    r"\blease\b|\bmachine time\b": "device time of the development machines",
    r"\b(?:our|this project's) (?:\d-core )?(?:CPU |GPU )?(?:machine|box)\b|\b\d-core box\b": "the developers' machines",
    r"(?-i:\bI (?:stopped|ran|tried|kept|chose|looked|think)\b)": "first-person run notes",
    r"\bthe next run\b": "plans of the work log",
}

#: where the rules apply: the product (not the tests, which hold the list itself)
PRODUCT_GLOBS: tuple[str, ...] = ("README.md", "BENCHMARKS.md", "docs/", "bundles/", "custom/", "benchmarks/")
PRODUCT_CONFIGS: tuple[str, ...] = (
    ".ci/run",
    ".flake8",
    ".gitignore",
    "pyproject.toml",
    "pytest.ini",
    "requirements.txt",
    "requirements-dev.txt",
)
TEXT_SUFFIXES: tuple[str, ...] = (".md", ".py", ".json", ".conf", ".txt", ".toml", ".ini", ".csv", ".cfg", ".yaml", "")

#: non-code files in git: each at most 1 MB, all together at most 5 MB (the model zoo's cap per file)
MAX_FILE_BYTES = 1_000_000
MAX_NON_CODE_BYTES = 5_000_000
CODE_SUFFIXES: tuple[str, ...] = (".py",)


def _tracked() -> list[str]:
    """Files in git (``git ls-files``) that exist in the working tree; the tree's files when it is not a checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts]
    return sorted(n for n in names if (REPO / n).is_file())


def _product_text_files() -> list[str]:
    keep = []
    for name in _tracked():
        product = name in PRODUCT_CONFIGS or any(
            name == g or (g.endswith("/") and name.startswith(g)) for g in PRODUCT_GLOBS
        )
        if product and Path(name).suffix in TEXT_SUFFIXES:
            keep.append(name)
    return keep


def _prose(path: Path) -> str:
    """The text the rules read: a Python file's comments and string literals, any other file whole."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    parts = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING) or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            parts.append(tok.string)
    return "\n".join(parts)


def forbidden_hits(text: str) -> list[str]:
    """Every ``'<match>' (<what it is>)`` of the forbidden patterns in ``text``."""
    hits = []
    for pattern, what in FORBIDDEN.items():
        for m in re.finditer(pattern, text, flags=re.IGNORECASE | re.MULTILINE):
            hits.append(f"{m.group(0).strip()!r} ({what})")
    return hits


def _pending(name: str) -> list:
    if name in PENDING_REWRITE:
        return [pytest.mark.xfail(strict=True, reason=PENDING_REWRITE[name])]
    return []


def _words(name: str) -> int:
    return len((REPO / name).read_text(encoding="utf-8").split())


@pytest.mark.parametrize("pattern,text", [(r"\bsessions?\b", "as in session 7"), (r"_s\d+\b", "runs/h100_128_s2")])
def test_the_patterns_catch_the_forms_they_name(pattern: str, text: str) -> None:
    assert re.search(pattern, text, flags=re.IGNORECASE)
    assert forbidden_hits(text)


@pytest.mark.parametrize(
    "text",
    [
        "a colour bar per case",
        "the progress bars of two stages",
        'kind[0] == "bar"',
        "see docs/troubleshooting.md",
        "stride s = 2; the s-th scan",
        "relative volume error at the last scan",
    ],
)
def test_the_patterns_leave_ordinary_words(text: str) -> None:
    assert forbidden_hits(text) == []


def test_python_names_are_not_read_only_comments_and_strings(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text('s2 = helper_s3 = 1  # plain comment\nx = "plain string"\n', encoding="utf-8")
    assert forbidden_hits(_prose(src)) == []
    src.write_text("y = 1  # as measured in session 7\n", encoding="utf-8")
    assert forbidden_hits(_prose(src)) == ["'session' (work sessions)"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=_pending(n)) for n in _product_text_files()])
def test_no_work_log_words(name: str) -> None:
    hits = forbidden_hits(_prose(REPO / name))
    assert not hits, f"{name}: " + "; ".join(hits)


@pytest.mark.parametrize("name", list(MAX_WORDS))
def test_word_count(name: str) -> None:
    assert _words(name) <= MAX_WORDS[name], f"{name} has {_words(name)} words, at most {MAX_WORDS[name]}"


@pytest.mark.parametrize("bundle", ["vae_baseline", "dipvae", "latent_ode", "tumour_seg"])
def test_bundle_docs_have_the_zoo_sections_in_order(bundle: str, request: pytest.FixtureRequest) -> None:
    name = f"bundles/{bundle}/docs/README.md"
    for mark in _pending(name):
        request.applymarker(mark)
    heads = re.findall(r"^## (.+?)\s*$", (REPO / name).read_text(encoding="utf-8"), flags=re.MULTILINE)
    found = [h for h in heads if h in ZOO_SECTIONS]
    assert found == ZOO_SECTIONS, f"{name}: sections {heads}, the zoo's are {ZOO_SECTIONS}"


def test_readme_lists_the_five_collapse_criteria() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## What a good result looks like", 1)[1].split("\n## ", 1)[0]
    criteria = re.findall(r"^\d\. \*\*(.+?)\*\*", section, flags=re.MULTILINE)
    assert len(criteria) == 5, criteria


@pytest.mark.parametrize(
    "name",
    ["README.md", "BENCHMARKS.md"]
    + [n for n in MAX_WORDS if n != "README.md"]
    + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
)
def test_linked_figures_and_files_exist(name: str) -> None:
    """Relative links to figures and non-Markdown files resolve (Markdown pages may be written alongside)."""
    path = REPO / name
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)\)", path.read_text(encoding="utf-8")):
        if "://" in target or target.endswith(".md"):
            continue
        if not (path.parent / target).exists():
            missing.append(target)
    assert not missing, f"{name} links to missing files: {missing}"


def test_committed_files_are_small() -> None:
    sizes = {n: (REPO / n).stat().st_size for n in _tracked()}
    big = {n: s for n, s in sizes.items() if s > MAX_FILE_BYTES}
    assert not big, f"files over {MAX_FILE_BYTES} bytes: {big}"
    non_code = sum(s for n, s in sizes.items() if Path(n).suffix not in CODE_SUFFIXES)
    assert non_code <= MAX_NON_CODE_BYTES, f"{non_code} bytes of non-code files, at most {MAX_NON_CODE_BYTES}"


def test_no_run_artifacts_in_git() -> None:
    kinds = (".npz", ".pt", ".ts", ".nii", ".gz", ".log")
    found = [n for n in _tracked() if n.endswith(kinds) or "/docs/runs/" in n]
    assert not found, found
