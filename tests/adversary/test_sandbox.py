"""The workflow sandbox after issue 17 item 2: cheaper per run, and still a safety net.

Each run's sandbox used to import `workflows/__init__.py`, which imported every workflow module
(compiled from source: no bytecode is written here), while `workflows.job_saga` was passed
through from the host, so the saga's own code ran outside the sandbox's restrictions. Now a run
imports only its workflow's modules, from bytecode, and passes `domain` and pydantic through.
"""

from __future__ import annotations

import builtins
import importlib.util
import sys
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import _runner as sandbox_runner_module

from domain.jobs import JobStatus
from tests.adversary.sandbox_probe import Echoes, ReadsTheClock, RollsADie
from workflows.cook_collection import CookCollectionWorkflow
from workflows.make_image import MakeImageWorkflow
from workflows.registry import (
    ALL_WORKFLOWS,
    PASSTHROUGH_MODULES,
    WORKFLOWS_DIR,
    sandbox_restrictions,
    sandbox_runner,
    warm_bytecode,
)


@pytest.mark.parametrize(
    ("probe", "call"),
    [(ReadsTheClock, "datetime.datetime.now"), (RollsADie, "random.random")],
)
async def test_a_nondeterministic_call_still_fails_the_workflow_under_the_workers_runner(
    temporal_dev_env: WorkflowEnvironment, probe: type, call: str
) -> None:
    client = temporal_dev_env.client
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[probe], workflow_runner=sandbox_runner()
    ):
        with pytest.raises(WorkflowFailureError) as caught:
            await client.execute_workflow(
                probe.run,  # type: ignore[attr-defined]
                id=f"sandbox-probe-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "RestrictedWorkflowAccessError"
    assert call in cause.message


def sandbox_modules(workflow_class: type) -> dict[str, types.ModuleType]:
    """The `sys.modules` one run of `workflow_class` sees inside the worker's sandbox.

    Reads the SDK's sandbox instance (`importer.new_modules`, not a public API): what a run
    imports afresh is exactly what this test is about.
    """
    instances: list[WorkflowInstance] = []

    class Capturing(SandboxedWorkflowRunner):
        def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
            instances.append(super().create_instance(det))
            return instances[-1]

    Capturing(restrictions=sandbox_restrictions()).prepare_workflow(
        workflow._Definition.must_from_class(workflow_class)
    )
    return dict(instances[0].importer.new_modules)  # type: ignore[attr-defined]


async def test_a_make_run_imports_only_its_own_modules_and_takes_domain_from_the_host() -> None:
    modules = sandbox_modules(MakeImageWorkflow)
    fresh = {name for name in modules if name == "workflows" or name.startswith("workflows.")}
    assert fresh == {
        "workflows",
        "workflows.make_image",
        "workflows.job_saga",
        "workflows.policies",
        "workflows.slots",
    }
    for name in fresh:
        assert modules[name] is not sys.modules[name], f"{name} must run inside the sandbox"
    shared = [name for name in modules if name == "domain" or name.startswith("domain.")]
    assert "domain.jobs" in shared
    for name in shared:
        assert modules[name] is sys.modules[name], f"{name} must be passed through"
    # One class per model: what the pydantic converter decodes is what the saga checks against.
    assert modules["workflows.job_saga"].JobStatus is JobStatus


async def test_a_cook_run_renders_its_pieces_with_a_sandboxed_make_workflow() -> None:
    modules = sandbox_modules(CookCollectionWorkflow)
    for name in ("workflows.cook_collection", "workflows.make_image", "workflows.job_saga"):
        assert modules[name] is not sys.modules[name], f"{name} must run inside the sandbox"
    assert "workflows.train_lora" not in modules
    assert "workflows.media_job" not in modules


def test_the_passthrough_list_holds_domain_and_pydantic_and_no_workflow_code() -> None:
    restrictions = sandbox_restrictions()
    for name in ("domain", "pydantic", "pydantic_core", "annotated_types"):
        assert name in PASSTHROUGH_MODULES
        assert name in restrictions.passthrough_modules
    assert not restrictions.passthrough_all_modules, "the sandbox must stay on"
    assert not [m for m in restrictions.passthrough_modules if m.split(".")[0] == "workflows"]
    assert {w.__module__.split(".")[0] for w in ALL_WORKFLOWS} == {"workflows"}


def test_the_worker_finds_fresh_bytecode_for_every_module_a_run_imports() -> None:
    assert warm_bytecode()
    for source in sorted(WORKFLOWS_DIR.glob("*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        assert cached.exists(), f"no bytecode for {source.name}"
        header = cached.read_bytes()[:16]
        if int.from_bytes(header[4:8], "little") & 1:  # hash-based (SOURCE_DATE_EPOCH set)
            fresh = header[8:16] == importlib.util.source_hash(source.read_bytes())
        else:
            fresh = int.from_bytes(header[8:12], "little") == int(source.stat().st_mtime)
        assert fresh, f"stale bytecode: {source.name}"


@activity.defn(name="sandbox_probe_echo")
async def _echo(word: str) -> str:
    return word


async def test_the_workers_runner_compiles_its_snippets_once_and_visits_payloads_outside(
    temporal_dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 (bench/cpu_profile.py): the SDK's sandbox compiled its few fixed snippets
    again for every activation, and entered the sandbox (a compile and the importer's swap of
    builtins) for every payload sequence it decoded or encoded, to ask which serialization
    context applies: 22 % of the workflow worker's CPU. Now each snippet is compiled once and
    the context comes from the SDK's instance directly; workflow code still runs only through
    the sandbox (the probes above still fail)."""
    executed: list[object] = []

    def spy(code: object, *args: Any) -> None:
        executed.append(code)
        builtins.exec(code, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(sandbox_runner_module, "exec", spy, raising=False)
    client = temporal_dev_env.client
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[Echoes],
        activities=[_echo],
        workflow_runner=sandbox_runner(),
    ):
        said = await client.execute_workflow(
            Echoes.run, "hello", id=f"sandbox-echo-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
    assert said == "hello"
    assert executed, "the runner still executes workflow code through the sandbox"
    codes = [code for code in executed if isinstance(code, types.CodeType)]
    assert len(codes) == len(executed), "each snippet compiled once, not at every call"
    asked = {"get_serialization_context", "get_external_store_context"}
    assert not [c for c in codes if asked & set(c.co_names)], "no sandbox round trip per payload"
    assert any("activate" in c.co_names for c in codes), "activations still run in the sandbox"
