"""What several test modules share: the `dset` process and server harness, the simulator-backed data dir.

`Server` runs `dset serve` in a subprocess; `dset` runs a command; `Env` is a data dir with a log, a read
model and a simulator answering every role, with the port-town fixture documents.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from dsetlog.catalog.documents import ingest_file
from dsetlog.catalog.projects import create_project
from dsetlog.engine.progress import Progress
from dsetlog.evaluation.quality import JUDGE_SYSTEM
from dsetlog.generation.document import DocRunResult, DocumentRun
from dsetlog.generation.models import Models
from dsetlog.generation.requests import GenerateRequest
from dsetlog.generation.texts import REPAIR_PROMPT, TITLE_PROMPT
from dsetlog.jobs.lifecycle import run_generation_job
from dsetlog.llm.client import RetryPolicy
from dsetlog.prompts import templates
from dsetlog.simulator.server import Simulator
from dsetlog.store.log import EventLog
from projections.readmodel import ReadModel

ROOT = Path(__file__).resolve().parents[1]

DSET = [sys.executable, "-m", "dsetlog"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("DSET_")}
    env.update(extra)
    return env


class Server:
    def __init__(self, data: Path, log_file: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_file = log_file
        with open(log_file, "ab") as err:
            self.proc = subprocess.Popen([*DSET, "serve", "--data", str(data), "--port", "0", *args], cwd=ROOT,
                                         stdout=subprocess.PIPE, stderr=err, env=env or clean_env(), text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("dset serve: http://"), (line, self.log_text())
        self.banner = line
        self.base = line.split()[2]

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                payload = resp.read()
                headers = {k.lower(): v for k, v in resp.headers.items()}
                status = resp.status
        except urllib.error.HTTPError as exc:
            payload, headers, status = exc.read(), {k.lower(): v for k, v in exc.headers.items()}, exc.code
        if headers.get("content-type", "").startswith("application/json"):
            return status, json.loads(payload), headers
        return status, payload, headers

    def get(self, path: str) -> Any:
        status, body, _ = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            status = self.get(f"/datasets/generate/{job_id}/status")
            seen.append(status["progress"])
            if status["status"] in ("completed", "failed"):  # (a cancelled job is failed, cancelled: true)
                status["_progress_seen"] = seen
                return status
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not finished: {status}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()


def questions_csv(path: Path, n: int, *, header: bool = True) -> Path:
    lines = (["question,status"] if header else []) + [f"What is fact number {i} about topic {i % 7}?," for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def dset(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*DSET, *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def against(sim: Simulator, *extra: str) -> list[str]:
    return ["--base-url", sim.base_url, "--model", "deepseek-reasoner", "--no-progress", *extra]


def sim_env() -> dict[str, str]:
    return clean_env(DSET_API_KEY="sk-test-secret-0123456789")



TOPICS = [
    ("Harbour", "The harbour opens at dawn and closes at dusk. Fishing boats unload their catch at the north quay. "
     "The harbour master keeps a register of every vessel that moors overnight."),
    ("Lighthouse", "The lighthouse was built of granite in 1854. Its lamp turns once every twelve seconds. "
     "A keeper lived in the tower until the light was automated in 1980."),
    ("Market", "The fish market is held on Tuesdays and Fridays. Traders sell cod, mackerel and crab from "
     "wooden stalls. Ice for the stalls comes from a plant beside the railway station."),
    ("Ferry", "A ferry crosses the estuary every half hour in summer. The crossing takes eleven minutes. "
     "Bicycles travel free, while cars pay a fixed toll at the southern ramp."),
    ("Museum", "The maritime museum displays ship models, charts and diving helmets. Entry is free for "
     "children under twelve. The museum closes on Mondays for cleaning."),
    ("Boatyard", "The boatyard repairs wooden hulls with oak and larch. Apprentices train for four years. "
     "Varnish is applied in thin coats during the dry months of late spring."),
    ("Tides", "Spring tides rise nearly six metres in the bay. Neap tides rise about half as much. "
     "Tide tables are printed each winter by the harbour office."),
    ("Birds", "Gulls nest on the cliffs above the harbour. Cormorants dry their wings on the breakwater. "
     "Puffins visit the outer islands between April and August."),
    ("Weather", "Westerly gales are common in the autumn. Fog rolls in from the sea on calm summer mornings. "
     "The coastguard broadcasts forecasts four times a day on channel sixteen."),
    ("Festival", "The sea festival takes place on the first weekend of July. Rowing crews race across the "
     "harbour mouth. Evening fireworks are launched from a barge moored off the pier."),
    ("Railway", "A branch railway reached the town in 1871. Trains carried fish to the inland cities overnight. "
     "The line closed to passengers in 1964 and became a cycle path."),
    ("School", "The nautical school teaches navigation, knots and engine care. Its students sail a training "
     "ketch each summer. Graduates often join the merchant navy or the lifeboat crew."),
]


def markdown(sections: int, *, repeat: int = 1) -> str:
    """A Markdown document: one '##' section (one chunk under the markdown strategy) per topic."""
    parts = ["# Port town guide\n"]
    for i in range(sections):
        title, body = TOPICS[i % len(TOPICS)]
        suffix = f" {i // len(TOPICS) + 1}" if i >= len(TOPICS) else ""
        parts.append(f"## {title}{suffix}\n\n{body}\n")
    return "\n".join(parts * repeat)


def plain_text(paragraphs: int) -> str:
    """A text file with no headings: its chunks need a topic from the chunking model."""
    return "\n\n".join(TOPICS[i % len(TOPICS)][1] for i in range(paragraphs)) + "\n"


def html_doc() -> str:
    return ("<!doctype html><html><head><title>Port</title><script>var x = 1;</script></head><body>"
            + "".join(f"<h2>{t}</h2><p>{b}</p>" for t, b in TOPICS[:3]) + "</body></html>")


GEN_SCHEMAS = {f"{m}_items" for m in templates.MODES}


def kind_of(body: dict[str, Any]) -> str:
    """What a request to the simulator was for: generate, title, repair, judge, benchmark."""
    fmt = body.get("response_format") or {}
    name = (fmt.get("json_schema") or {}).get("name", "")
    text = "\n".join(str(m.get("content", "")) for m in body["messages"])
    if text.startswith(REPAIR_PROMPT[:40]):
        return "repair"  # asked for in the generation's own schema
    if name in GEN_SCHEMAS:
        return "generate"
    if name == "judge_verdict" or JUDGE_SYSTEM[:60] in text:
        return "judge"
    if text.startswith(TITLE_PROMPT[:40]):
        return "title"
    if "Question:" in text and body["messages"][0]["role"] == "system":
        return "benchmark"
    if fmt.get("type") == "json_object":
        return "generate"  # a custom prompt or a provider without json_schema
    return "other"


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in body["messages"] if m["role"] == "user")


class Env:
    """A data dir with a log and a read model, and a simulator answering every role."""

    def __init__(self, tmp_path: Path, sim: Simulator) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.log = EventLog.in_dir(self.data)
        self.rm = ReadModel.open(self.data)
        self.sim = sim

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return path

    def ingest(self, path: Path, *, project: str = "demo", strategy: str = "markdown") -> str:
        pid = create_project(self.log, self.rm, name=project).id
        ingest_file(self.log, self.rm, project_id=pid, path=path, strategy=strategy)
        return pid

    def project_md(self, sections: int, *, project: str = "demo", repeat: int = 1) -> str:
        return self.ingest(self.write(f"{project}.md", markdown(sections, repeat=repeat)), project=project)

    def request(self, project: str = "demo", **fields: Any) -> GenerateRequest:
        fields.setdefault("analyze_quality", False)
        return GenerateRequest(project_id=project, **fields)

    def run(self, project: str = "demo", *, job_id: str | None = None, **fields: Any) -> DocRunResult:
        return run_generation_job(log=self.log, rm=self.rm, data=self.data, req=self.request(project, **fields),
                                  job_id=job_id or "job_" + uuid.uuid4().hex[:12], kind="generate",
                                  sim_url=self.sim.base_url, progress=Progress(total=0, enabled=False))

    def document_run(self, project: str = "demo", *, retry: RetryPolicy | None = None, **fields: Any) -> DocumentRun:
        req = self.request(project, **fields)
        return DocumentRun(log=self.log, rm=self.rm, data_dir=self.data, req=req,
                           models=Models.resolve(req, simulator_url=self.sim.base_url),
                           **({"retry": retry} if retry else {}))

    def entries(self, dataset_id: str) -> list[Any]:
        self.rm.catch_up()
        return self.rm.full(self.rm.datasets.entries(dataset_id))

    def events(self, kind: type) -> list[Any]:
        return [r.event for r in self.log.read() if isinstance(r.event, kind)]

    def requests(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [b for b in self.sim.requests() if kind is None or kind_of(b) == kind]


def pancreas_markdown(sections: int) -> str:
    """A Markdown document of ``sections`` short sections on one medical topic."""
    return "\n\n".join(
        f"# Topic {i}\n\nThe pancreas makes insulin, which lowers blood sugar number {i}. Diabetes follows when "
        f"it fails, and symptom {i} is thirst. Patients {i} check their glucose daily." for i in range(sections))
