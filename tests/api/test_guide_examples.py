"""The Compileo datasets guide's own Best Practices code, run as written against a real `dset serve --simulate`.

``GUIDE`` below is the guide's code (../shared/seeds/003_*, section "Best Practices", 1-7), copied word for
word; only its base URL is pointed at the server this module starts, and its ``time.sleep`` is made shorter
(the code's own ``import time`` gets a module whose sleep waits at most SLEEP seconds). It talks to the server
with the real ``requests`` library, as the guide's readers do. The tests call its functions as a reader would
and check what they return, and what the server holds after them.
"""

from __future__ import annotations

import builtins
import statistics
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from harness import Server, markdown

from dsetlog.llm.providers import PROFILES

GUIDE_BASE = "http://localhost:8000"
SLEEP = 0.2  # seconds the guide's time.sleep(10) (and its retry backoff) waits here

# The guide's code, verbatim (Best Practices, sections 1-7).
GUIDE = r'''
# Choose appropriate models based on use case
generation_configs = {
    "high_quality": {
        "classification_model": "gemini-2.5-flash",
        "concurrency": 1,
        "datasets_per_chunk": 2
    },
    "high_volume": {
        "classification_model": "ollama",
        "concurrency": 4,
        "datasets_per_chunk": 5
    },
    "balanced": {
        "classification_model": "gemini",
        "concurrency": 2,
        "datasets_per_chunk": 3
    }
}

# Set appropriate quality thresholds
quality_configs = {
    "research": {"quality_threshold": 0.9, "analyze_quality": True},
    "training": {"quality_threshold": 0.8, "analyze_quality": True},
    "prototyping": {"quality_threshold": 0.6, "analyze_quality": False}
}

import requests
import time

def monitor_dataset_generation(job_id):
    """Monitor dataset generation with progress updates."""
    while True:
        response = requests.get(f'http://localhost:8000/api/v1/datasets/generate/{job_id}/status')
        status = response.json()

        print(f"Progress: {status['progress']}% - {status['current_step']}")

        if status['status'] == 'completed':
            print("Dataset generation completed!")
            return status['result']
        elif status['status'] == 'failed':
            print(f"Generation failed: {status['error']}")
            return None

        time.sleep(10)  # Check every 10 seconds

def generate_multiple_datasets(project_ids, config):
    """Generate datasets for multiple projects."""
    jobs = {}

    # Start all jobs
    for project_id in project_ids:
        job_config = config.copy()
        job_config['project_id'] = project_id

        response = requests.post('http://localhost:8000/api/v1/datasets/generate', json=job_config)
        jobs[project_id] = response.json()['job_id']

    # Monitor all jobs
    results = {}
    for project_id, job_id in jobs.items():
        result = monitor_dataset_generation(job_id)
        results[project_id] = result

    return results

def analyze_dataset_quality(dataset_id):
    """Analyze the quality distribution of a dataset."""
    response = requests.get(f'http://localhost:8000/api/v1/datasets/{dataset_id}')
    dataset = response.json()

    quality_summary = dataset['quality_summary']

    print(f"Average Quality Score: {quality_summary['average_score']:.2f}")
    print("Quality Distribution:")
    for level, count in quality_summary['distribution'].items():
        print(f"  {level.capitalize()}: {count}")

    print("Category Distribution:")
    for category, count in quality_summary['categories'].items():
        print(f"  {category}: {count}")

    return quality_summary

def improve_low_quality_entries(dataset_id, min_quality=0.7):
    """Identify and regenerate low-quality entries."""
    # Get all entries
    response = requests.get(f'http://localhost:8000/api/v1/datasets/{dataset_id}/entries?per_page=1000')
    entries = response.json()['entries']

    # Find low-quality entries
    low_quality = [e for e in entries if e['quality_score'] < min_quality]
    low_quality_ids = [e['id'] for e in low_quality]

    if low_quality_ids:
        print(f"Found {len(low_quality_ids)} low-quality entries to regenerate")

        # Regenerate low-quality entries
        regenerate_response = requests.post(
            f'http://localhost:8000/api/v1/datasets/{dataset_id}/regenerate',
            json={
                "entry_ids": low_quality_ids,
                "regeneration_config": {
                    "model": "gemini-2.5-flash",
                    "temperature": 0.3,  # Lower temperature for higher quality
                    "improve_quality": True
                }
            }
        )

        return regenerate_response.json()
    else:
        print("No low-quality entries found")
        return None

def generate_taxonomy_aware_dataset(project_id, taxonomy_name):
    """Generate dataset with taxonomy-based categorization."""

    # First, ensure taxonomy exists
    taxonomy_response = requests.get('http://localhost:8000/api/v1/taxonomy/')
    taxonomies = taxonomy_response.json()['taxonomies']
    taxonomy = next((t for t in taxonomies if t['name'] == taxonomy_name), None)

    if not taxonomy:
        raise ValueError(f"Taxonomy '{taxonomy_name}' not found")

    # Generate dataset with taxonomy
    dataset_config = {
        "project_id": project_id,
        "taxonomy_project": taxonomy['project_id'],
        "taxonomy_name": taxonomy_name,
        "generation_mode": "question",
        "analyze_quality": True,
        "datasets_per_chunk": 3
    }

    response = requests.post('http://localhost:8000/api/v1/datasets/generate', json=dataset_config)
    return response.json()

def create_versioned_dataset(project_id, base_name, version="1.0.0"):
    """Create a versioned dataset with proper naming."""

    dataset_config = {
        "project_id": project_id,
        "dataset_name": f"{base_name}_v{version}",
        "enable_versioning": True,
        "generation_mode": "default",
        "format_type": "jsonl",
        "analyze_quality": True
    }

    response = requests.post('http://localhost:8000/api/v1/datasets/generate', json=dataset_config)
    job_id = response.json()['job_id']

    # Wait for completion
    result = monitor_dataset_generation(job_id)

    return result

import concurrent.futures
import requests

def batch_generate_datasets(projects, config_template):
    """Generate datasets for multiple projects concurrently."""

    def generate_single_dataset(project):
        config = config_template.copy()
        config['project_id'] = project['id']
        config['dataset_name'] = f"{project['name']}_dataset"

        response = requests.post('http://localhost:8000/api/v1/datasets/generate', json=config)
        return {
            'project': project['name'],
            'job_id': response.json()['job_id']
        }

    # Process up to 3 projects concurrently
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as executor:
        futures = [executor.submit(generate_single_dataset, project) for project in projects]
        results = [future.result() for future in concurrent.futures.as_completed(futures)]

    return results

def safe_dataset_generation(project_id, config, max_retries=3):
    """Generate dataset with error handling and retries."""

    for attempt in range(max_retries):
        try:
            # Start generation
            response = requests.post('http://localhost:8000/api/v1/datasets/generate', json=config)
            response.raise_for_status()
            job_id = response.json()['job_id']

            # Monitor completion
            result = monitor_dataset_generation(job_id)

            if result and result.get('error'):
                if attempt < max_retries - 1:
                    print(f"Attempt {attempt + 1} failed: {result['error']}. Retrying...")
                    time.sleep(5 * (attempt + 1))  # Exponential backoff
                    continue
                else:
                    raise Exception(f"Dataset generation failed after {max_retries} attempts: {result['error']}")

            return result

        except requests.exceptions.RequestException as e:
            if attempt < max_retries - 1:
                print(f"Network error on attempt {attempt + 1}: {e}. Retrying...")
                time.sleep(5 * (attempt + 1))
                continue
            else:
                raise Exception(f"Dataset generation failed after {max_retries} attempts due to network errors")

    return None
'''


def _short_time() -> types.ModuleType:
    """``time`` as the guide imports it, with sleeps of at most SLEEP seconds."""
    short = types.ModuleType("time")
    short.__dict__.update(time.__dict__)
    short.sleep = lambda seconds: time.sleep(min(seconds, SLEEP))  # type: ignore[attr-defined]
    return short


def load_guide(base: str) -> dict[str, Any]:
    """The guide's functions and configs, their URLs on ``base`` (``http://127.0.0.1:PORT``)."""
    short_time = _short_time()
    real_import = builtins.__import__

    def guide_import(name: str, *args: Any, **kwargs: Any) -> Any:
        return short_time if name == "time" else real_import(name, *args, **kwargs)

    namespace: dict[str, Any] = {"__builtins__": {**builtins.__dict__, "__import__": guide_import},
                                 "__name__": "compileo_guide"}
    code = compile(GUIDE.replace(GUIDE_BASE, base), "<compileo guide: Best Practices>", "exec")
    exec(code, namespace)  # noqa: S102 - the guide's code, as its readers run it
    return namespace


# --- the server and what the guide expects to find in it ---------------------------------------------------

PROJECTS = ("harbour", "lighthouse", "market")
TAXONOMY = "port_topics"
TAXONOMY_CATEGORIES: list[Any] = [  # strings at every level, as the guide's readers write them
    {"name": "Places", "children": ["Harbour", "Lighthouse", {"name": "Trade", "children": ["Market", "Ferry"]}]},
    "Nature",
    {"name": "People", "children": ["Museum", "School"]},
]


class Guide:
    def __init__(self, server: Server, code: dict[str, Any], projects: dict[str, str]) -> None:
        self.server, self.code, self.projects = server, code, projects

    def __getattr__(self, name: str) -> Any:
        return self.code[name]

    def entries(self, dataset_id: str) -> list[dict[str, Any]]:
        return self.server.get(f"/datasets/{dataset_id}/entries?per_page=10000")["entries"]


@pytest.fixture(scope="module")
def guide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guide]:
    tmp = tmp_path_factory.mktemp("guide")
    server = Server(tmp / "data", tmp / "server.log", "--simulate", "--sim-latency-ms", "2")
    try:
        projects = {}
        for i, name in enumerate(PROJECTS):
            status, project, _ = server.call("POST", "/projects", {"name": name})
            assert status == 201, project
            doc = {"filename": f"{name}.md", "content": markdown(4 + i), "strategy": "markdown"}
            status, body, _ = server.call("POST", f"/projects/{project['id']}/documents", doc)
            assert status == 201, body
            projects[name] = project["id"]
        status, body, _ = server.call("POST", "/taxonomy/", {"project_id": projects["harbour"], "name": TAXONOMY,
                                                             "categories": TAXONOMY_CATEGORIES})
        assert status == 201, body
        yield Guide(server, load_guide(server.base.removesuffix("/api/v1")), projects)
    finally:
        server.stop()


def _dataset_of(guide: Guide, result: dict[str, Any] | None) -> str:
    assert result is not None, "the job failed (monitor_dataset_generation printed why)"
    dataset_id = result["dataset_id"]
    assert isinstance(dataset_id, str) and dataset_id
    return dataset_id


# --- 1-2: strategies, monitoring, batches ------------------------------------------------------------------


@pytest.mark.parametrize(("models", "quality"), [("high_quality", "research"), ("high_volume", "training"),
                                                 ("balanced", "prototyping")])
def test_generate_multiple_datasets_with_each_config(guide: Guide, models: str, quality: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = {**guide.generation_configs[models], **guide.quality_configs[quality]}
    project_ids = [guide.projects["harbour"], guide.projects["lighthouse"]]
    results = guide.generate_multiple_datasets(project_ids, config)
    out = capsys.readouterr().out
    assert out.count("Dataset generation completed!") == 2, out
    assert set(results) == set(project_ids)
    for project_id, result in results.items():
        dataset_id = _dataset_of(guide, result)
        dataset = guide.server.get(f"/datasets/{dataset_id}")
        assert dataset["project_id"] == project_id and dataset["total_entries"] > 0, dataset
        entries = guide.entries(dataset_id)
        # every entry has a number for a score, whatever analyze_quality says (the guide compares them)
        assert all(isinstance(e["quality_score"], float) for e in entries), [e["quality_score"] for e in entries]
        # the profile asked for is the one recorded, with the model it names (labelled simulated: --simulate
        # answered it)
        asked = config["classification_model"]  # a profile ("ollama") or a model of a profile's family
        profile, model = (asked, PROFILES[asked].model) if asked in PROFILES else (asked.split("-")[0], asked)
        assert {e["metadata"]["profile"] for e in entries} == {profile}
        assert {e["metadata"]["model"] for e in entries} == {model}
        assert all(e["simulated"] for e in entries)


@pytest.mark.parametrize("mode", ["default", "question", "answer", "summarization"])
def test_every_generation_mode_of_the_guide_makes_a_dataset(guide: Guide, mode: str) -> None:
    """The modes POST /generate lists, each alone: answer mode finds the questions itself (question mode asks for
    questions only)."""
    results = guide.generate_multiple_datasets([guide.projects["market"]], {"generation_mode": mode})
    dataset_id = _dataset_of(guide, results[guide.projects["market"]])
    entries = guide.entries(dataset_id)
    assert entries and all(e["question"].strip() for e in entries), entries[:3]
    if mode != "question":
        assert all(e["answer"].strip() for e in entries), entries[:3]


def test_batch_generate_datasets_names_each_dataset(guide: Guide) -> None:
    projects = [{"id": guide.projects[name], "name": name} for name in PROJECTS]
    started = guide.batch_generate_datasets(projects, {"datasets_per_chunk": 1, "analyze_quality": False})
    assert sorted(r["project"] for r in started) == sorted(PROJECTS)
    for r in started:
        dataset_id = _dataset_of(guide, guide.monitor_dataset_generation(r["job_id"]))
        assert guide.server.get(f"/datasets/{dataset_id}")["name"] == f"{r['project']}_dataset"


def test_create_versioned_dataset_twice_gives_two_versions(guide: Guide) -> None:
    first = guide.create_versioned_dataset(guide.projects["lighthouse"], "keepers")
    second = guide.create_versioned_dataset(guide.projects["lighthouse"], "keepers")
    a, b = _dataset_of(guide, first), _dataset_of(guide, second)
    assert a != b
    versions = [guide.server.get(f"/datasets/{d}")["version"] for d in (a, b)]
    assert versions[0] and versions[1] and versions[0] != versions[1], versions
    assert guide.server.get(f"/datasets/{a}")["name"].startswith("keepers_v1.0.0")


def test_safe_dataset_generation_returns_the_result(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    config = {"project_id": guide.projects["market"], "datasets_per_chunk": 1}
    result = guide.safe_dataset_generation(guide.projects["market"], config)
    assert result is not None and not result.get("error"), result
    assert result["entries_count"] > 0
    assert "Retrying" not in capsys.readouterr().out


def test_a_cancelled_job_ends_the_guides_monitor_loop(guide: Guide, capsys: pytest.CaptureFixture[str]) -> None:
    """The guide knows four states: a cancelled job is failed, and its error says it was cancelled."""
    server = guide.server
    status, project, _ = server.call("POST", "/projects", {"name": "long"})
    assert status == 201, project
    status, doc, _ = server.call("POST", f"/projects/{project['id']}/documents",
                                 {"filename": "long.md", "content": markdown(60), "strategy": "markdown"})
    assert status == 201 and doc["chunks"] >= 60, doc  # 60 chunks, one at a time: seconds of work
    status, accepted, _ = server.call("POST", "/datasets/generate", {"project_id": project["id"], "concurrency": 1})
    assert status == 200, accepted
    status, cancelled, _ = server.call("POST", f"/jobs/{accepted['job_id']}/cancel", {"reason": "enough"})
    assert status == 200, cancelled
    assert guide.monitor_dataset_generation(accepted["job_id"]) is None  # the loop ended
    final = server.get(f"/datasets/generate/{accepted['job_id']}/status")
    assert final["status"] == "failed" and final["cancelled"] is True and final["error"] == "cancelled: enough"
    assert "Generation failed: cancelled: enough" in capsys.readouterr().out
    listed = server.get("/jobs?status=failed")["jobs"]
    assert accepted["job_id"] in [j["job_id"] for j in listed] and {j["status"] for j in listed} == {"failed"}


# --- 3: quality ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysed(guide: Guide) -> str:
    """A dataset made with the guide's "training" thresholds."""
    config = {**guide.generation_configs["high_volume"], **guide.quality_configs["training"]}
    results = guide.generate_multiple_datasets([guide.projects["market"]], config)
    return _dataset_of(guide, results[guide.projects["market"]])


def test_analyze_dataset_quality_prints_and_returns_the_summary(guide: Guide, analysed: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    summary = guide.analyze_dataset_quality(analysed)
    out = capsys.readouterr().out
    entries = guide.entries(analysed)
    scores = [e["quality_score"] for e in entries]
    assert summary["average_score"] == pytest.approx(statistics.fmean(scores), abs=1e-6)
    assert f"Average Quality Score: {summary['average_score']:.2f}" in out
    assert set(summary["distribution"]) == {"high", "medium", "low"}
    assert sum(summary["distribution"].values()) == len(entries)
    assert sum(summary["categories"].values()) == len(entries)
    for level, count in summary["distribution"].items():
        assert f"  {level.capitalize()}: {count}" in out


def test_improve_low_quality_entries_regenerates_those_below(guide: Guide, analysed: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = {e["id"]: e for e in guide.entries(analysed)}
    assert len(before) > 0
    # a bar between the scores, so that some entries are below it and some are not
    scores = sorted(e["quality_score"] for e in before.values())
    bar = scores[len(scores) // 2] if scores[0] < scores[-1] else scores[0] + 1e-9
    low = {i for i, e in before.items() if e["quality_score"] < bar}
    answer = guide.improve_low_quality_entries(analysed, min_quality=bar)
    assert answer is not None and answer["message"] == f"Regeneration started for {len(low)} entries", answer
    assert f"Found {len(low)} low-quality entries to regenerate" in capsys.readouterr().out
    result = guide.monitor_dataset_generation(answer["job_id"])
    assert result is not None and result["regenerated"] == len(low), result
    after = {e["id"]: e for e in guide.entries(analysed)}
    assert set(after) == set(before)
    for entry_id in low:
        # a regeneration never leaves an entry worse than it was: a lower-scoring revision is not kept current
        assert after[entry_id]["quality_score"] >= before[entry_id]["quality_score"], (before[entry_id],
                                                                                       after[entry_id])
        assert "A reviewer found the previous version wanting" not in after[entry_id]["answer"]
    mean_before = statistics.fmean(e["quality_score"] for e in before.values())
    assert statistics.fmean(e["quality_score"] for e in after.values()) >= mean_before


def test_improve_low_quality_entries_on_a_prototyping_dataset(guide: Guide) -> None:
    """analyze_quality false still scores every entry, so the guide's comparison works."""
    config = {**guide.generation_configs["balanced"], **guide.quality_configs["prototyping"]}
    results = guide.generate_multiple_datasets([guide.projects["harbour"]], config)
    dataset_id = _dataset_of(guide, results[guide.projects["harbour"]])
    answer = guide.improve_low_quality_entries(dataset_id, min_quality=2.0)  # every entry is below 2
    assert answer is not None and answer["job_id"].startswith("regenerate_"), answer
    assert guide.monitor_dataset_generation(answer["job_id"]) is not None


def test_the_guides_edit_is_rescored_and_an_emptied_answer_leaves_the_download(guide: Guide, analysed: str) -> None:
    entry = guide.entries(analysed)[0]
    edit = requests.put(f"{guide.server.base}/datasets/{analysed}/entries/{entry['id']}", json={
        "question": "What are the most common symptoms of diabetes mellitus?",
        "answer": "The most common symptoms include polydipsia (excessive thirst), polyuria (frequent urination), "
                  "unexplained weight loss, and fatigue.",
        "category": "Endocrinology", "feedback": "Improved medical terminology"})
    assert edit.status_code == 200 and edit.json()["message"] == f"Entry {entry['id']} updated successfully"
    emptied = requests.put(f"{guide.server.base}/datasets/{analysed}/entries/{entry['id']}", json={"answer": ""})
    assert emptied.status_code == 200, emptied.text
    scored = emptied.json()["entry"]
    assert scored["quality_score"] < 0.7 and scored["below_threshold"], scored
    download = requests.get(f"{guide.server.base}/datasets/{analysed}/download?format_type=jsonl")
    assert download.status_code == 200 and entry["id"] not in download.text


# --- 4: taxonomy ------------------------------------------------------------------------------------------


def test_generate_taxonomy_aware_dataset_uses_the_nested_taxonomy(guide: Guide) -> None:
    taxonomies = guide.server.get("/taxonomy/")["taxonomies"]
    (tax,) = [t for t in taxonomies if t["name"] == TAXONOMY]
    assert set(tax["leaf_categories"]) == {"Places > Harbour", "Places > Lighthouse", "Places > Trade > Market",
                                           "Places > Trade > Ferry", "Nature", "People > Museum", "People > School"}
    answer = guide.generate_taxonomy_aware_dataset(guide.projects["harbour"], TAXONOMY)
    assert answer["message"] == "Dataset generation started", answer
    dataset_id = _dataset_of(guide, guide.monitor_dataset_generation(answer["job_id"]))
    entries = guide.entries(dataset_id)
    # a leaf of the taxonomy, or "Other" (what the prompt offers for a question that fits none)
    assert entries and all(e["category"] in [*tax["leaf_categories"], "Other"] for e in entries), entries[:3]
    assert {e["category"] for e in entries} & set(tax["leaf_categories"])
    with pytest.raises(ValueError, match="Taxonomy 'nope' not found"):
        guide.generate_taxonomy_aware_dataset(guide.projects["harbour"], "nope")
