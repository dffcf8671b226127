"""Two processes writing to the same database at once: no lock errors, nothing lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
