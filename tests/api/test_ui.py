"""The review page end to end: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
real `python -m dsetlog serve --simulate` on a free loopback port, holding a dataset generated on the simulator.

Load, filter, sort, search and page; edit an entry and read the edit back through the API; rate it with a
comment; select several entries and regenerate them, watching the job's progress until the new answers show;
follow and cancel a running job; use the page with the keyboard alone; give the API token when the server asks
(the page's own files load without it, the data does not).

Skipped only when /usr/bin/chromium is missing (`apt-get install chromium`). Set DSET_UI_SCREENSHOTS=DIR to
keep a screenshot of the page at the end of every test.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("the review page's browser tests need Debian's chromium at /usr/bin/chromium "
                "(apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIM_LATENCY_MS = "300"  # slow enough to watch a job move, fast enough for a short test run
LAPTOP = {"width": 1366, "height": 768}

expect.set_options(timeout=20_000)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("DSET_")}
    env.update(extra)
    return env


def markdown(sections: int, word: str = "pancreas") -> str:
    return "\n\n".join(
        f"# Topic {i}\n\nThe {word} makes insulin, which lowers blood sugar number {i}. Diabetes follows when "
        f"it fails, and symptom {i} is thirst. Patients {i} check their glucose daily." for i in range(sections))


class Server:
    """`python -m dsetlog serve --simulate` in a subprocess, and a small JSON client for its API."""

    def __init__(self, data: Path, log_file: Path, *, env: dict[str, str] | None = None,
                 token: str | None = None) -> None:
        self.log_file = log_file
        self.token = token
        with open(log_file, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dsetlog", "serve", "--data", str(data), "--host", "127.0.0.1",
                 "--port", "0", "--simulate", "--sim-latency-ms", SIM_LATENCY_MS],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, env=env or clean_env(), text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("dset serve: http://"), (line, self.log_text())
        self.api = line.split()[2]  # http://127.0.0.1:PORT/api/v1
        self.root = self.api.removesuffix("/api/v1")

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body: Any) -> Any:
        status, out = self.call("POST", path, body)
        assert status in (200, 201), (path, status, out)
        return out

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/jobs/{job_id}")
            if status["status"] in ("completed", "failed"):
                return status
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish: {status}")

    def entries(self, dataset_id: str, **params: Any) -> dict[str, Any]:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self.get(f"/datasets/{dataset_id}/entries?{query}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


class Served:
    def __init__(self, server: Server, dataset_id: str, project_id: str) -> None:
        self.server, self.dataset_id, self.project_id = server, dataset_id, project_id


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server holding `med_qa`: 18 entries generated on the simulator from a six-section markdown file."""
    tmp = tmp_path_factory.mktemp("ui")
    server = Server(tmp / "data", tmp / "server.log")
    try:
        project = server.post("/projects", {"name": "med"})
        doc = server.post(f"/projects/{project['id']}/documents",
                          {"filename": "notes.md", "content": markdown(6), "strategy": "markdown"})
        assert doc["chunks"] == 6
        accepted = server.post("/datasets/generate", {
            "project_id": project["id"], "datasets_per_chunk": 3, "concurrency": 3, "quality_threshold": 0.0,
            "include_evaluation_sets": True, "dataset_name": "med_qa", "run_benchmarks": True,
            "benchmark_suite": "reference_qa"})
        done = server.wait_job(accepted["job_id"])
        assert done["status"] == "completed" and done["result"]["entries_count"] == 18, done
        yield Served(server, done["result"]["dataset_id"], project["id"])
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def screenshot(page: Page, name: str) -> None:
    shots = os.environ.get("DSET_UI_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"{name}.png"))


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    pg.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    yield pg
    screenshot(pg, request.node.name)
    context.close()
    assert not errors, errors  # no uncaught exception, no failed request


def open_dataset(page: Page, served: Served, hash_: str = "") -> None:
    """Open the page on the dataset: by clicking it in the list, or from a URL that names it (``#dataset=...``)."""
    page.goto(served.server.root + "/" + hash_)
    if not hash_:
        page.locator(f'#datasets-list button[data-id="{served.dataset_id}"]').click()
    expect(page.locator("#dataset-title")).to_have_text("med_qa")
    expect(page.locator("#entries-status")).to_contain_text("entries")


def row_ids(page: Page) -> list[str]:
    return page.locator("#entries-body tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")


def wait_rows(page: Page, ids: list[str]) -> None:
    """The table shows exactly these entries, in this order."""
    deadline = time.monotonic() + 20
    while row_ids(page) != ids:
        assert time.monotonic() < deadline, (row_ids(page), ids)
        page.wait_for_timeout(50)


def current_id(page: Page) -> str:
    return page.locator('#entries-body tr[aria-current="true"]').get_attribute("data-id") or ""


# --- the tests ---------------------------------------------------------------------------------------


def test_the_page_lists_datasets_jobs_and_entries_and_downloads(page: Page, served: Served) -> None:
    page.goto(served.server.root + "/")
    expect(page).to_have_title("dsetlog review")
    expect(page.locator("#server-badge")).to_have_text("simulated models")
    expect(page.locator(f'#datasets-list button[data-id="{served.dataset_id}"]')).to_contain_text("18 entries")
    expect(page.locator("#jobs-list li.job.completed").filter(has_text="generate").first).to_contain_text("100%")

    page.locator(f'#datasets-list button[data-id="{served.dataset_id}"]').click()
    api = served.server.entries(served.dataset_id, per_page=50)
    wait_rows(page, [e["id"] for e in api["entries"]])
    expect(page.locator("#entries-status")).to_contain_text("1–18 of 18 entries")
    dataset = served.server.get(f"/datasets/{served.dataset_id}")
    splits = ", ".join(f"{name} {count}" for name, count in dataset["splits"].items())
    assert sum(dataset["splits"].values()) == 18 and len(dataset["splits"]) >= 2, dataset["splits"]
    expect(page.locator("#dataset-meta")).to_contain_text(f"splits: {splits}")
    summary = dataset["quality_summary"]
    expect(page.locator("#quality-summary .big")).to_have_text(f"{summary['average_score']:.2f}")

    first = page.locator("#entries-body tr[data-id]").first
    expect(first.locator(".c-q")).to_contain_text(api["entries"][0]["question"])
    expect(first.locator(".c-a")).to_contain_text(api["entries"][0]["answer"][:40])

    with page.expect_download() as info:  # three splits: a zip of their files
        page.locator('#download-buttons button[data-format="jsonl"]').click()
    download = info.value
    assert download.suggested_filename == f"{served.dataset_id}.zip"
    with zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())) as zf:
        files = sorted(n for n in zf.namelist() if n.endswith(".jsonl"))
        assert files == ["test.jsonl", "train.jsonl", "validation.jsonl"]  # an empty split too: one file each
        assert sorted(zf.namelist()) == ["README.md", *files]  # the dataset card: load_dataset reads the splits
        assert sum(len(zf.read(n).splitlines()) for n in files) == 18
    with page.expect_download() as info:
        page.locator('#download-buttons button[data-format="csv"]').click()
    assert info.value.suggested_filename == f"{served.dataset_id}.zip"


def test_the_benchmark_figures_and_answers_show_in_the_dataset_head(page: Page, served: Served) -> None:
    open_dataset(page, served)
    (run,) = served.server.get(f"/datasets/{served.dataset_id}")["benchmarks"]
    box = page.locator(f'#benchmarks details.benchmark[data-suite="reference_qa"][data-model="{run["model"]}"]')
    summary = box.locator("summary")
    expect(summary).to_contain_text(f"F1 {run['results']['token_f1']:.2f}")
    expect(summary).to_contain_text(f"({run['results']['questions']} questions)")
    expect(box.locator("ol.bench-answers li")).to_have_count(0)  # loaded when opened
    summary.click()
    answers = served.server.get(f"/datasets/{served.dataset_id}/benchmark-answers")["answers"]
    items = box.locator("ol.bench-answers li")
    expect(items).to_have_count(len(answers))
    expect(items.first).to_contain_text(answers[0]["question"])
    expect(items.first).to_contain_text(answers[0]["answer"][:40])


def test_filters_sort_search_and_paging_match_the_api(page: Page, served: Served) -> None:
    server, ds = served.server, served.dataset_id
    flag_me = server.entries(ds, sort_by="position", per_page=1)["entries"][0]["id"]
    server.post(f"/datasets/{ds}/feedback", {"entry_ids": [flag_me], "feedback_type": "quality_issue",
                                             "comments": "vague"})
    open_dataset(page, served)

    page.fill("#f-min", "0.9")
    expected = server.entries(ds, min_quality=0.9, per_page=50)
    assert 0 < expected["total"] < 18
    wait_rows(page, [e["id"] for e in expected["entries"]])
    scores = [float(s) for s in page.locator("#entries-body .c-qual .score").all_inner_texts()]
    assert scores and min(scores) >= 0.9
    page.fill("#f-max", "0.95")  # nothing between 0.9 and 0.95: an empty table that says so
    expect(page.locator("#entries-body")).to_contain_text("No entry matches these filters.")
    page.click("#f-reset")
    wait_rows(page, [e["id"] for e in server.entries(ds, per_page=50)["entries"]])

    category = page.locator("#f-category option").nth(1).get_attribute("value")
    assert category
    page.select_option("#f-category", category)
    expected = server.entries(ds, category=category, per_page=50)
    wait_rows(page, [e["id"] for e in expected["entries"]])
    assert set(page.locator("#entries-body td.c-cat").all_inner_texts()) == {category}
    page.select_option("#f-difficulty", "beginner")
    wait_rows(page, [e["id"] for e in server.entries(ds, category=category, difficulty="beginner",
                                                       per_page=50)["entries"]])
    page.click("#f-reset")

    page.select_option("#f-flagged", "true")
    wait_rows(page, [e["id"] for e in server.entries(ds, flagged="true", per_page=50)["entries"]])
    assert flag_me in row_ids(page)
    expect(page.locator(f'#entries-body tr[data-id="{flag_me}"]')).to_contain_text("flagged")
    page.select_option("#f-flagged", "false")
    wait_rows(page, [e["id"] for e in server.entries(ds, flagged="false", per_page=50)["entries"]])
    page.click("#f-reset")

    page.fill("#f-q", "DIABETES")  # case-insensitive, question or answer
    expected = server.entries(ds, q="diabetes", per_page=50)
    assert 0 < expected["total"] < 18
    wait_rows(page, [e["id"] for e in expected["entries"]])
    for text in page.locator("#entries-body tr[data-id]").all_inner_texts():
        assert "diabetes" in text.lower()
    page.select_option("#f-split", "train")
    wait_rows(page, [e["id"] for e in server.entries(ds, q="diabetes", split="train", per_page=50)["entries"]])
    page.click("#f-reset")

    page.select_option("#f-sort", "category:")
    expected = server.entries(ds, sort_by="category", per_page=50)
    wait_rows(page, [e["id"] for e in expected["entries"]])
    cats = page.locator("#entries-body td.c-cat").all_inner_texts()
    assert cats == sorted(cats, key=str.casefold)
    page.select_option("#f-sort", "difficulty:desc")
    wait_rows(page, [e["id"] for e in server.entries(ds, sort_by="difficulty", order="desc", per_page=50)["entries"]])

    page.select_option("#f-sort", "position:")
    page.select_option("#f-per-page", "10")
    pages = [[e["id"] for e in server.entries(ds, sort_by="position", per_page=10, page=n)["entries"]]
             for n in (1, 2)]
    wait_rows(page, pages[0])
    expect(page.locator("#entries-status")).to_contain_text("Page 1 of 2 · 1–10 of 18 entries")
    expect(page.locator("#page-prev")).to_be_disabled()
    page.click("#page-next")
    wait_rows(page, pages[1])
    expect(page.locator("#entries-status")).to_contain_text("Page 2 of 2 · 11–18 of 18")
    expect(page.locator("#page-next")).to_be_disabled()
    page.locator("body").press("p")
    wait_rows(page, pages[0])
    page.locator("body").press("n")
    wait_rows(page, pages[1])

    # the dataset, filters and page live in the URL: a reload comes back to them
    page.reload()
    wait_rows(page, pages[1])
    expect(page.locator("#f-per-page")).to_have_value("10")
    expect(page.locator("#f-sort")).to_have_value("position:")


def test_an_edit_is_saved_through_the_api_and_shows_in_the_history(page: Page, served: Served) -> None:
    server, ds = served.server, served.dataset_id
    open_dataset(page, served, "#dataset=" + ds + "&sort_by=position")
    target = server.entries(ds, sort_by="position", per_page=50)["entries"][1]
    wait_rows(page, [e["id"] for e in server.entries(ds, sort_by="position", per_page=50)["entries"]])

    page.locator("body").press("j")
    assert current_id(page) == target["id"]
    page.keyboard.press("e")  # opens the entry and its edit form, the answer focused
    answer = page.locator("#e-answer")
    expect(answer).to_be_focused()
    expect(answer).to_have_value(target["answer"])
    new_answer = "The pancreas makes insulin; insulin lowers blood sugar. (edited in the browser)"
    answer.fill(new_answer)
    page.fill("#e-category", "endocrinology")
    page.fill("#e-note", "tightened the wording")
    page.locator("#e-answer").press("Control+Enter")

    expect(page.locator("#edit-form")).to_be_hidden()
    expect(page.locator("#d-answer")).to_have_text(new_answer)
    expect(page.locator("#toast")).to_contain_text(f"Saved: revision {target['revision'] + 1}")
    stored = server.get(f"/datasets/{ds}/entries/{target['id']}")
    assert stored["answer"] == new_answer and stored["category"] == "endocrinology"
    assert stored["revision"] == target["revision"] + 1
    history = server.get(f"/entries/{ds}/{target['id']}/history")
    edited = [e for e in history["events"] if e["type"] == "EntryEdited"]
    assert edited and edited[-1]["fields"]["answer"] == new_answer
    assert edited[-1]["fields"]["feedback"] == "tightened the wording"
    expect(page.locator("#d-history li.ev-EntryEdited").last).to_contain_text("tightened the wording")
    expect(page.locator(f'#entries-body tr[data-id="{target["id"]}"] td.c-cat')).to_have_text("endocrinology")

    # Esc cancels an edit: nothing is sent
    page.keyboard.press("e")
    page.locator("#e-answer").fill("not saved")
    page.keyboard.press("Escape")
    expect(page.locator("#edit-form")).to_be_hidden()
    expect(page.locator("#d-answer")).to_have_text(new_answer)
    assert server.get(f"/datasets/{ds}/entries/{target['id']}")["answer"] == new_answer


def test_a_rating_with_a_comment_is_recorded(page: Page, served: Served) -> None:
    server, ds = served.server, served.dataset_id
    entries = server.entries(ds, sort_by="position", per_page=50)["entries"]
    open_dataset(page, served, "#dataset=" + ds + "&sort_by=position")
    wait_rows(page, [e["id"] for e in entries])
    target = entries[2]
    page.locator("body").press("j")
    page.keyboard.press("j")
    assert current_id(page) == target["id"]

    page.keyboard.press("4")  # opens the entry, picks 4 and puts the cursor in the comment
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator('input[name=rating][value="4"]')).to_be_checked()
    expect(page.locator("#r-comment")).to_be_focused()
    page.keyboard.type("clear and grounded")
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_contain_text("Rated 4 with a comment")
    expect(page.locator("#d-feedback")).to_contain_text("★ 4.0")
    expect(page.locator("#d-feedback")).to_contain_text("clear and grounded")
    fb = server.get(f"/datasets/{ds}/entries/{target['id']}")["feedback"]
    assert fb["ratings"][-1] == 4 and fb["comments"][-1] == "clear and grounded"
    expect(page.locator(f'#entries-body tr[data-id="{target["id"]}"] td.c-rate')).to_contain_text("★ 4.0")

    # with the mouse: a content error flags the entry
    page.locator(".stars label").nth(0).click()
    page.select_option("#r-type", "content_error")
    page.fill("#r-comment", "wrong organ")
    page.get_by_role("button", name="Send rating").click()
    expect(page.locator("#d-feedback")).to_contain_text("wrong organ")
    stored = server.get(f"/datasets/{ds}/entries/{target['id']}")
    assert stored["flagged"] and stored["feedback"]["ratings"][-2:] == [4, 1]
    expect(page.locator("#detail-meta")).to_contain_text("flagged")
    expect(page.locator(f'#entries-body tr[data-id="{target["id"]}"]')).to_contain_text("flagged")


def test_regenerating_selected_entries_shows_progress_and_the_new_answers(page: Page, served: Served) -> None:
    server, ds = served.server, served.dataset_id
    entries = server.entries(ds, sort_by="position", per_page=50)["entries"]
    chosen = entries[3:7]
    open_dataset(page, served, "#dataset=" + ds + "&sort_by=position")
    wait_rows(page, [e["id"] for e in entries])

    # select four: two with the mouse, two with the keyboard
    page.locator(f'#entries-body tr[data-id="{chosen[0]["id"]}"] input[type=checkbox]').check()
    page.locator(f'#entries-body tr[data-id="{chosen[1]["id"]}"] input[type=checkbox]').check()
    page.locator(f'#entries-body tr[data-id="{chosen[2]["id"]}"] td.c-q').click()  # current, and opens it
    page.keyboard.press("Escape")
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("x")
    expect(page.locator("#selection-count")).to_have_text("4 selected")
    assert set(page.locator("#entries-body tr.selected").evaluate_all("rs => rs.map(r => r.dataset.id)")) == {
        e["id"] for e in chosen}

    # record every state the progress box goes through
    page.evaluate("""() => {
        window.seenProgress = [];
        const box = document.getElementById('regen-progress');
        new MutationObserver(() => {
            const bar = box.querySelector('progress');
            if (bar) window.seenProgress.push([box.dataset.status, Number(bar.value), box.innerText]);
        }).observe(box, {childList: true, subtree: true, attributes: true});
    }""")
    page.get_by_role("button", name="Regenerate 4 selected…").click()
    dialog = page.locator("#regen-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#regen-count")).to_have_text("4 entries")
    expect(page.locator("#g-improve")).to_be_checked()
    page.fill("#g-temp", "0.5")
    page.fill("#g-conc", "1")  # one call at a time: a job long enough to watch
    page.check("#g-lower")  # every new answer becomes current, even one scoring lower than the old
    dialog.get_by_role("button", name="Regenerate").click()
    expect(dialog).to_be_hidden()

    box = page.locator("#regen-progress")
    expect(box).to_be_visible()
    expect(box).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(box).to_contain_text("100%")
    seen = page.evaluate("window.seenProgress")
    running = [s for s in seen if s[0] == "running" and 0 < s[1] < 100]
    assert running, seen  # a progress between 0 and 100 was on screen while the job ran
    assert any("Regenerating entry" in s[2] for s in running), running
    values = [s[1] for s in seen]
    assert values == sorted(values), values  # progress only moves forward
    job_id = box.get_attribute("data-job")
    assert job_id and job_id.startswith("regenerate_")
    expect(page.locator("#selection-count")).to_have_text("0 selected")
    expect(page.locator(f'#jobs-list li[data-job="{job_id}"]')).to_contain_text("completed")

    status = server.get(f"/jobs/{job_id}")
    assert status["status"] == "completed" and status["result"]["regenerated"] == 4
    assert server.get(f"/datasets/{ds}/entries/{chosen[0]['id']}")
    for old in chosen:
        now = server.get(f"/datasets/{ds}/entries/{old['id']}")
        assert now["regeneration_job_id"] == job_id and now["revision"] == old["revision"] + 1
        assert now["answer"] != old["answer"]
        expect(page.locator(f'#entries-body tr[data-id="{old["id"]}"] td.c-a')).to_contain_text(now["answer"][:40])
        expect(page.locator(f'#entries-body tr[data-id="{old["id"]}"] td.c-rev')).to_have_text(str(now["revision"]))

    # the entry view shows the new answer, and the history keeps the old one
    page.locator(f'#entries-body tr[data-id="{chosen[0]["id"]}"] td.c-q').click()
    now = server.get(f"/datasets/{ds}/entries/{chosen[0]['id']}")
    expect(page.locator("#d-answer")).to_have_text(now["answer"])
    expect(page.locator("#d-history li.ev-RegenerationRequested")).to_contain_text("improve quality")
    expect(page.locator("#d-history li.ev-EntryRegenerated")).to_be_visible()
    expect(page.locator("#d-history li.ev-EntryGenerated")).to_contain_text(chosen[0]["answer"][:40])


def test_the_keyboard_alone_moves_opens_and_closes(page: Page, served: Served) -> None:
    server, ds = served.server, served.dataset_id
    entries = server.entries(ds, sort_by="position", per_page=50)["entries"]
    open_dataset(page, served, "#dataset=" + ds + "&sort_by=position")
    wait_rows(page, [e["id"] for e in entries])
    assert current_id(page) == entries[0]["id"]

    page.locator("body").press("j")
    page.keyboard.press("j")
    assert current_id(page) == entries[2]["id"]
    page.keyboard.press("k")
    assert current_id(page) == entries[1]["id"]
    focused = page.evaluate("document.activeElement.dataset.id")
    assert focused == entries[1]["id"]  # the current row has the focus...
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")  # ...and it shows

    page.keyboard.press("Enter")
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#d-question")).to_have_text(entries[1]["question"])
    expect(page.locator("#detail-title")).to_be_focused()
    page.keyboard.press("j")  # the open view follows
    expect(page.locator("#d-question")).to_have_text(entries[2]["question"])
    assert current_id(page) == entries[2]["id"]
    expect(page.locator("#d-chunk")).to_contain_text("Topic")
    expect(page.locator("#d-quality")).to_contain_text("quality score")
    expect(page.locator("#d-history li.ev-EntryGenerated")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    assert page.evaluate("document.activeElement.dataset.id") == entries[2]["id"]

    page.keyboard.press("/")
    expect(page.locator("#f-q")).to_be_focused()
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    expect(page.locator("#help-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help-dialog")).to_be_hidden()

    # j past the last row of a page goes on to the next page
    page.select_option("#f-per-page", "10")
    wait_rows(page, [e["id"] for e in entries[:10]])
    page.locator("body").press("k")  # at the first row of page 1: nothing before it
    assert current_id(page) == entries[0]["id"]
    for _ in range(10):
        page.keyboard.press("j")
    wait_rows(page, [e["id"] for e in entries[10:]])
    expect(page.locator('#entries-body tr[aria-current="true"]')).to_have_attribute("data-id", entries[10]["id"])
    page.keyboard.press("k")
    wait_rows(page, [e["id"] for e in entries[:10]])
    expect(page.locator('#entries-body tr[aria-current="true"]')).to_have_attribute("data-id", entries[9]["id"])

    # every control has a name a screen reader can read
    unnamed = page.evaluate("""() => Array.from(document.querySelectorAll('input, select, textarea, button'))
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()
                     && !e.closest('[aria-label]'))
        .map(e => e.outerHTML.slice(0, 80))""")
    assert unnamed == []


def test_a_running_job_shows_live_progress_and_can_be_cancelled(page: Page, served: Served) -> None:
    server = served.server
    project = server.post("/projects", {"name": "long"})
    server.post(f"/projects/{project['id']}/documents",
                {"filename": "long.md", "content": markdown(40, "liver"), "strategy": "markdown"})
    accepted = server.post("/datasets/generate", {"project_id": project["id"], "concurrency": 1,
                                                  "dataset_name": "long_qa"})
    job_id = accepted["job_id"]

    page.goto(server.root + "/")
    item = page.locator(f'#jobs-list li[data-job="{job_id}"]')
    expect(item).to_contain_text("running")
    expect(item.locator(".step")).to_contain_text("Processing chunk")
    first = int(item.locator("progress").get_attribute("value") or 0)
    deadline = time.monotonic() + 20  # the bar moves while the page polls the job's status
    while int(item.locator("progress").get_attribute("value") or 0) <= first:
        assert time.monotonic() < deadline, "the job's progress never moved on the page"
        page.wait_for_timeout(100)
    item.get_by_role("button", name=re.compile("Cancel job")).click()
    expect(item).to_contain_text("cancelled")
    expect(item.get_by_role("button")).to_have_count(0)
    job = server.get(f"/jobs/{job_id}")
    assert job["status"] == "failed" and job["cancelled"], job  # the API's four states; the page says cancelled


def test_the_page_asks_for_the_token_and_sends_it(browser: Browser, tmp_path: Path) -> None:
    token = "ui-token-0123456789abcdef"
    server = Server(tmp_path / "data", tmp_path / "server.log", env=clean_env(DSET_API_TOKEN=token), token=token)
    context = browser.new_context(viewport=LAPTOP)
    try:
        page = context.new_page()
        api_auth: list[str | None] = []
        page.on("request", lambda r: api_auth.append(r.headers.get("authorization")) if "/api/v1/" in r.url else None)
        page.goto(server.root + "/")  # the page's own files load without the token; its API calls need it
        expect(page.locator("#auth-banner")).to_be_visible()
        expect(page.locator("#token-input")).to_be_focused()
        expect(page.locator("#token-state")).to_have_text("token needed")
        screenshot(page, "token_needed")
        assert api_auth and all(a is None for a in api_auth)

        page.fill("#token-input", "wrong")
        page.keyboard.press("Enter")
        expect(page.locator("#token-state")).to_have_text("token refused")
        expect(page.locator("#auth-banner")).to_be_visible()

        api_auth.clear()
        page.fill("#token-input", token)
        page.keyboard.press("Enter")
        expect(page.locator("#auth-banner")).to_be_hidden()
        expect(page.locator("#datasets-list")).to_contain_text("No datasets yet.")
        expect(page.locator("#server-badge")).to_have_text("simulated models")
        good = f"Bearer {token}"
        assert good in api_auth  # (a call sent with the wrong token just before may still be in the list)
        assert all(a == good for a in api_auth[api_auth.index(good):])
        assert page.evaluate("localStorage.getItem('dset.token')") == token

        api_auth.clear()
        page.reload()  # remembered
        expect(page.locator("#datasets-list")).to_contain_text("No datasets yet.")
        expect(page.locator("#auth-banner")).to_be_hidden()
        assert api_auth and all(a == good for a in api_auth)
    finally:
        context.close()
        server.stop()
    assert token not in server.log_text()


def test_the_page_itself_loads_without_the_token_and_the_data_does_not(tmp_path: Path) -> None:
    token = "ui-token-0123456789abcdef"
    server = Server(tmp_path / "data", tmp_path / "server.log", env=clean_env(DSET_API_TOKEN=token))
    try:
        for path, kind in (("/", "text/html"), ("/static/app.js", "text/javascript"), ("/static/app.css", "text/css")):
            with urllib.request.urlopen(server.root + path, timeout=10) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith(kind)
                if path == "/":
                    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        for path in ("/datasets", "/openapi.json", "/jobs"):
            status, body = server.call("GET", path)
            assert status == 401 and set(body) == {"title", "description"}  # the data stays behind the token
        host, port = server.root.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/static/../api/v1/datasets")  # not a way round the token
        resp = conn.getresponse()
        assert resp.status in (401, 404) and b'"datasets":' not in resp.read()
        conn.close()
    finally:
        server.stop()
