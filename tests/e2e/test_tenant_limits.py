"""Per-tenant abuse limits across edge replicas (CONTRACT §8): two `sluice edge` processes with tiny limits on the
stack's NATS, one tenant's counts shared by both, another tenant untouched, and counts that heal after a crash.

Tasks that must stay unfinished ask the demo model to stall for a minute; every test cancels what it left running.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from sluice import subjects
from sluice.active_tasks import ActiveTasks
from sluice.apikeys import add_key
from sluice.bus import Bus, connect
from sluice.config import CommonConfig
from sluice.records import TaskStore
from stream_edge.commands import TaskService
from stream_edge.reconciler import Lease, Reconciler
from support.edge import edge_process
from support.procs import ServiceProcess
from support.stack import Stack, stack
from support.waiting import eventually

__all__ = ["stack"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MAX_ACTIVE = 2
RATE = 5
MAX_STREAMS = 2
STALL = "[fault:stall:60] hold on"  # a task that stays working for a minute unless canceled
TENANTS = ("active", "other", "rate", "healed", "streams", "crashed")


@dataclass
class Edges:
    """Two edge replicas with the same limits, and a key per tenant (names unique to this run)."""

    urls: tuple[str, str]
    keys: dict[str, str]  # short name → API key
    tenants: dict[str, str]  # short name → tenant
    env: dict[str, str]  # the edges' settings, for one more replica

    def client(self, edge: int | str, tenant: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        url = edge if isinstance(edge, str) else self.urls[edge]
        return httpx.AsyncClient(base_url=url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def edges(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    root = tmp_path_factory.mktemp("tenant-limits")
    keys_file = root / "keys"
    run = uuid.uuid4().hex[:8]
    tenants = {name: f"{name}-{run}" for name in TENANTS}
    keys = {name: add_key(keys_file, tenant)[0] for name, tenant in tenants.items()}
    env = {
        "SLUICE_AUTH": "keys",
        "SLUICE_API_KEYS_FILE": str(keys_file),
        "SLUICE_TENANT_MAX_ACTIVE": str(MAX_ACTIVE),
        "SLUICE_TENANT_RATE": str(RATE),
        "SLUICE_TENANT_MAX_STREAMS": str(MAX_STREAMS),
        "SLUICE_RECONCILE_INTERVAL_S": "0",  # the tests drive the reconciler themselves
    }
    processes: list[ServiceProcess] = []
    try:
        urls = []
        for _ in range(2):
            process, url = edge_process(root, stack.nats_url, **env)
            processes.append(process)
            urls.append(url)
        yield Edges((urls[0], urls[1]), keys, tenants, env)
    finally:
        for process in processes:
            process.kill()


@pytest_asyncio.fixture
async def bus(stack: Stack) -> AsyncIterator[Bus]:
    connected = await connect(CommonConfig(nats_urls=(stack.nats_url,)), name="sluice-tests-tenant-limits")
    try:
        yield connected
    finally:
        await connected.close()


async def create(client: httpx.AsyncClient, text: str = STALL, **headers: str) -> httpx.Response:
    return await client.post("/v1/tasks", json={"input": text}, headers=headers)


async def cancel_all(client: httpx.AsyncClient, task_ids: list[str]) -> None:
    for task_id in task_ids:
        response = await client.post(f"/v1/tasks/{task_id}/cancel", json={})
        assert response.status_code in (202, 409), response.text


def refused(response: httpx.Response) -> int:
    """The Retry-After of a `429 tenant_limit` in the error envelope (fails the test for anything else)."""
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "tenant_limit"
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


async def test_unfinished_tasks_are_counted_across_edges_and_a_finished_task_makes_room(edges: Edges) -> None:
    started: list[str] = []
    async with edges.client(0, "active") as first, edges.client(1, "active") as second:
        try:
            for _ in range(MAX_ACTIVE):
                created = await create(first)
                assert created.status_code == 201, created.text
                started.append(created.json()["id"])
            # The second replica knows the first one's tasks: the next creation is refused, and leaves nothing.
            over = await create(second, **{"Idempotency-Key": "third"})
            refused(over)
            assert refused(await create(first)) <= 10
            async with edges.client(1, "other") as other:  # another tenant is not affected
                theirs = await create(other)
                assert theirs.status_code == 201, theirs.text
                await cancel_all(other, [theirs.json()["id"]])
            # A cancel on either replica ends a task: its place is free at once, and the refused key was never
            # claimed (it now creates a task of its own).
            await cancel_all(second, started[:1])
            again = await create(second, **{"Idempotency-Key": "third"})
            assert again.status_code == 201, again.text
            assert again.json()["id"] not in started
            started.append(again.json()["id"])
            # A task the runner completes gives its place back too.
            await cancel_all(first, started[1:2])
            quick = await create(first, "hello")
            assert quick.status_code == 201, quick.text
            quick_id = quick.json()["id"]

            async def completed() -> bool:
                record = (await second.get(f"/v1/tasks/{quick_id}")).json()
                return bool(record["state"] == "completed")

            await eventually(completed, timeout_s=60, what="the quick task completed")
            after = await create(second)
            assert after.status_code == 201, after.text
            started.append(after.json()["id"])
        finally:
            await cancel_all(first, started)


async def test_creations_per_minute_are_counted_across_edges(edges: Edges) -> None:
    made: list[str] = []
    async with edges.client(0, "rate") as first, edges.client(1, "rate") as second:
        try:
            while True:  # RATE creations, each canceled at once (no active-task limit in the way)
                response = await create(first if len(made) % 2 else second)
                if response.status_code != 201:
                    break
                made.append(response.json()["id"])
                await cancel_all(first, made[-1:])
            # A new minute window may have begun in the middle of the loop: RATE at most in each of two windows.
            assert 1 <= len(made) < 2 * RATE
            retry_after = refused(response)
            assert retry_after <= 60
            refused(await create(second if len(made) % 2 else first))  # the other replica refuses as well
            async with edges.client(1, "other") as other:  # another tenant's creations are its own
                theirs = await create(other)
                assert theirs.status_code == 201, theirs.text
                await cancel_all(other, [theirs.json()["id"]])
        finally:
            await cancel_all(first, made)


async def test_places_left_by_a_crashed_writer_are_freed_by_the_reconciler(edges: Edges, bus: Bus) -> None:
    tenant = edges.tenants["healed"]
    active = ActiveTasks(await bus.js.key_value(subjects.LIMITS_BUCKET))
    store = TaskStore(await bus.js.key_value(subjects.TASKS_BUCKET))
    lease = Lease(await bus.js.key_value(subjects.LEASES_BUCKET), "tenant-limits-test", holder="test")

    async def known(_: str) -> bool:
        return True

    reconciler = Reconciler(TaskService(bus, store, known), lease, interval_s=1, grace_s=0, active=active)
    async with edges.client(0, "healed") as first, edges.client(1, "healed") as second:
        # As if an edge died between taking a place and writing the task's record (twice: the limit is reached).
        for n in range(MAX_ACTIVE):
            assert await active.take(tenant, f"01NEVERWRITTEN{n:012d}", MAX_ACTIVE)
        refused(await create(second))
        await reconciler.free_places()
        assert await active.held(tenant) == {}
        # As if a task's last writer died between its terminal record and freeing its place.
        ended = await create(first)
        assert ended.status_code == 201, ended.text
        ended_id = ended.json()["id"]
        await cancel_all(first, [ended_id])
        assert ended_id not in await active.held(tenant)
        assert await active.take(tenant, ended_id, MAX_ACTIVE)
        await reconciler.free_places()
        assert await active.held(tenant) == {}
        healed = [await create(second) for _ in range(MAX_ACTIVE)]
        assert [r.status_code for r in healed] == [201] * MAX_ACTIVE
        await cancel_all(second, [r.json()["id"] for r in healed])


async def stream_refused(client: httpx.AsyncClient, task_id: str) -> bool:
    """Does this edge refuse the tenant one more stream of the task (a short one: what exists now, then the end)?"""
    response = await client.get(f"/v1/tasks/{task_id}/events", params={"follow": "false"})
    if response.status_code == 200:
        return False
    refused(response)
    return True


async def open_streams(
    streams: contextlib.AsyncExitStack, client: httpx.AsyncClient, task_id: str
) -> list[AsyncIterator[str]]:
    """MAX_STREAMS live streams of the task, open (a first line read) until `streams` closes them. Keep the line
    iterators: one that is garbage-collected closes its stream."""
    lines = []
    for _ in range(MAX_STREAMS):
        response = await streams.enter_async_context(client.stream("GET", f"/v1/tasks/{task_id}/events"))
        assert response.status_code == 200
        lines.append(response.aiter_lines())
        await anext(lines[-1])
    return lines


async def test_open_streams_are_counted_across_edges_and_a_closed_one_makes_room(edges: Edges) -> None:
    async with edges.client(0, "streams") as first, edges.client(1, "streams") as second:
        task_id = (await create(first)).json()["id"]
        try:
            async with contextlib.AsyncExitStack() as streams:
                held = await open_streams(streams, first, task_id)
                assert await stream_refused(first, task_id)  # this edge knows at once
                await eventually(lambda: stream_refused(second, task_id), timeout_s=30, what="the other edge refusing")
                async with edges.client(1, "other") as other:  # another tenant is not affected
                    theirs = (await create(other)).json()["id"]
                    assert not await stream_refused(other, theirs)
                    await cancel_all(other, [theirs])
                assert len(held) == MAX_STREAMS

            async def admitted() -> bool:
                return not await stream_refused(second, task_id)

            await eventually(admitted, timeout_s=30, what="the other edge admitting once the streams closed")
        finally:
            await cancel_all(first, [task_id])


async def test_the_open_streams_of_a_crashed_edge_stop_counting(
    edges: Edges, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    process, url = edge_process(tmp_path_factory.mktemp("crashing-edge"), stack.nats_url, **edges.env)
    async with edges.client(url, "crashed") as doomed, edges.client(1, "crashed") as second:
        task_id = (await create(doomed)).json()["id"]
        try:
            async with contextlib.AsyncExitStack() as streams:
                held = await open_streams(streams, doomed, task_id)
                await eventually(lambda: stream_refused(second, task_id), timeout_s=30, what="the other edge refusing")
                assert len(held) == MAX_STREAMS
                process.kill()  # its streams break; nobody writes its counts again
                with contextlib.suppress(httpx.HTTPError):
                    await streams.aclose()

            async def admitted() -> bool:
                return not await stream_refused(second, task_id)

            await eventually(admitted, timeout_s=30, what="the crashed edge's counts expiring")
        finally:
            process.kill()
            await cancel_all(second, [task_id])
