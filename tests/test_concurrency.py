"""Two processes writing to the same database at once: no lock errors, nothing lost."""

from __future__ import annotations

import operator
import subprocess
import sys
import textwrap
from typing import Annotated, TypedDict

from criticloop.store import Store

WRITER = textwrap.dedent(
    """
    import sys
    from criticloop.store import GenerationRecord, PairRecord, Store
    db, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store.open(db)
    for i in range(n):
        store.record_generations([GenerationRecord(
            prompt_id="ad-001", config_hash=tag, candidate_index=i, text=f"{tag} {i}",
            model="fake-model", sampling={})])
        store.record_pair(PairRecord(prompt_id="ad-001", chosen=f"{tag} good {i}",
                                     rejected=f"{tag} bad {i}", source="synthetic"))
    print("ok")
    """
)


def test_two_writers_at_once(demo_store: Store):
    n = 300
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(demo_store.path), tag, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("left", "right")
    ]
    outputs = [w.communicate(timeout=240) for w in writers]
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert "locked" not in err and out.strip() == "ok"
    counts = demo_store.counts()
    assert counts["generations"] == 2 * n
    assert counts["pairs"] == 2 * n


def test_a_thread_per_invoke_reuses_the_connections_of_threads_that_ended(store, settings):
    # LangGraph runs every invoke's nodes on fresh threads: a connection per thread ever
    # started ran out of file descriptors over a night's prompts.
    import threading

    from criticloop.graphs.feedback import ThreadStores

    stores = ThreadStores(settings.db_path)
    seen = []

    def node() -> None:
        seen.append(stores.get().counts()["prompts"])

    for _ in range(40):
        pair = [threading.Thread(target=node) for _ in range(2)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()
    assert len(seen) == 80 and stores.open_connections <= 3
    stores.close()
    assert stores.open_connections == 0


def test_each_judging_worker_gets_its_share_of_the_concurrency_and_endpoint_limits(settings):
    from criticloop.graphs._workers import worker_settings

    settings = settings.model_copy(
        update={
            "concurrency": 9,
            "policy": settings.policy.model_copy(update={"max_in_flight": 16}),
            "judge": settings.judge.model_copy(
                update={"max_in_flight": 5, "requests_per_minute": 600.0}
            ),
        }
    )
    share = worker_settings(settings, 4)
    assert share.concurrency == 3  # rounded up: 4 workers x 3 >= 9
    assert share.policy.max_in_flight == 4 and share.policy.requests_per_minute is None
    assert share.judge.max_in_flight == 1 and share.judge.requests_per_minute == 150.0
    assert worker_settings(settings, 8).judge.max_in_flight == 1  # never none at all
    assert settings.concurrency == 9  # the run's own settings are left as they were


def test_criticloop_invokes_run_their_parallel_nodes_on_the_same_threads(demo_store, settings):
    # LangGraph builds a thread pool for every invoke and joins it at the end: three or four
    # threads started and joined a prompt. Tracer.invoke hands it one pool for the process.
    import itertools
    import threading

    from criticloop.graphs.tracing import Tracer
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict, total=False):
        ran: Annotated[list[str], operator.add]

    threads: list[threading.Thread] = []

    def node(name: str):
        def run(state: State) -> State:
            threads.append(threading.current_thread())
            return {"ran": [name]}

        return run

    builder = StateGraph(State)
    for name in ("a", "b", "c"):  # one step of three nodes, as the critics after prepare
        builder.add_node(name, node(name))
        builder.add_edge(START, name)
        builder.add_edge(name, END)
    graph = builder.compile(checkpointer=InMemorySaver())  # its writes use the pool too
    run_id = demo_store.start_run("graph", {})
    prompt_id = demo_store.prompt_ids()[0]
    tracer = Tracer(settings)
    thread_ids = itertools.count()

    def threads_of(invoke) -> set[threading.Thread]:
        threads.clear()
        for _ in range(12):
            config = {"configurable": {"thread_id": str(next(thread_ids))}}
            assert sorted(invoke(config)["ran"]) == ["a", "b", "c"]
        return set(threads)

    def invoke(config: dict) -> dict:
        return tracer.invoke(
            graph, {}, config, demo_store, run_id=run_id, prompt_id=prompt_id, kind="start"
        )

    def pool_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("langgraph-node")}

    before = pool_threads()  # earlier tests in this process may have grown the pool
    ours = threads_of(invoke)
    after = pool_threads()
    assert ours <= after  # the pool's, alive: waiting for the next invoke, not joined
    assert len(after - before) <= 4  # at most one step's worth (3 nodes, a checkpoint write)
    assert threading.current_thread() not in ours
    # Every other invoke keeps LangGraph's own pools: new threads, ended with the invoke.
    theirs = threads_of(lambda config: graph.invoke({}, config))
    assert len(theirs) >= 12 and not any(thread.is_alive() for thread in theirs)
    assert demo_store.db.execute("SELECT count(*) FROM traces").fetchone()[0] == 12
