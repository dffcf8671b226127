"""Ordered, named schema migrations. Append new ones; never edit one that has shipped."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from ..vocab import OUTCOMES, REVIEW_KINDS, TASK_TYPES

migrations = Migrations("criticloop")


def _check(column: str, allowed: tuple[str, ...]) -> str:
    return f"CHECK ({column} IN ({', '.join(repr(v) for v in allowed)}))"


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        f"""
        CREATE TABLE brands (
            id TEXT PRIMARY KEY,            -- slug chosen by the user, the natural key
            name TEXT NOT NULL,
            voice TEXT NOT NULL,            -- JSON: description, tone, preferred/banned terms, exemplars
            compliance TEXT NOT NULL,       -- JSON: required disclosure, banned claims, competitors...
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE campaigns (
            id TEXT PRIMARY KEY,
            brand_id TEXT NOT NULL REFERENCES brands(id),
            name TEXT NOT NULL,
            product TEXT NOT NULL,
            ad_copy TEXT NOT NULL,
            keywords TEXT NOT NULL,         -- JSON list
            compliance TEXT NOT NULL,       -- JSON: campaign rules added to the brand's
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE prompts (
            id TEXT PRIMARY KEY,            -- the user's id, or p- + hash of the content
            task_type TEXT NOT NULL {_check("task_type", TASK_TYPES)},
            messages TEXT NOT NULL,         -- JSON conversation of role/content turns, ends with a user turn
            text TEXT NOT NULL,             -- the last user turn, for search and display
            persona TEXT,
            brand_id TEXT REFERENCES brands(id),
            campaign_id TEXT REFERENCES campaigns(id),
            metadata TEXT NOT NULL,         -- JSON
            source TEXT NOT NULL,           -- where it was imported from
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX prompts_task_type ON prompts(task_type);
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,             -- generate, graph, train...
            status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
            config TEXT NOT NULL,           -- JSON, secrets excluded
            summary TEXT,                   -- JSON
            pid INTEGER,                    -- of the process running it, to spot killed runs
            started_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE TABLE adapters (
            version TEXT PRIMARY KEY,
            base_model TEXT NOT NULL,
            method TEXT NOT NULL,           -- dpo, ppo, grpo, rloo
            path TEXT NOT NULL,
            parent_version TEXT REFERENCES adapters(version),
            run_id TEXT REFERENCES runs(id),
            metrics TEXT NOT NULL,          -- JSON
            status TEXT NOT NULL CHECK (status IN ('candidate', 'promoted', 'retired', 'rejected')),
            created_at TEXT NOT NULL,
            promoted_at TEXT
        );
        CREATE TABLE generations (
            id TEXT PRIMARY KEY,            -- hash of (prompt, config_hash, candidate_index)
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            config_hash TEXT NOT NULL,      -- model + adapter + sampling: same config, same rows
            candidate_index INTEGER NOT NULL,
            text TEXT NOT NULL,
            model TEXT NOT NULL,
            adapter_version TEXT REFERENCES adapters(version),
            sampling TEXT NOT NULL,         -- JSON
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            finish_reason TEXT,             -- stop | length | supplied
            run_id TEXT REFERENCES runs(id),
            created_at TEXT NOT NULL,
            UNIQUE (prompt_id, config_hash, candidate_index)
        );
        CREATE TABLE critiques (
            id TEXT PRIMARY KEY,            -- hash of (generation, critic, version, backend, run)
            generation_id TEXT NOT NULL REFERENCES generations(id),
            critic TEXT NOT NULL,
            score REAL CHECK (score IS NULL OR (score >= 0 AND score <= 1)),
            confidence REAL CHECK (confidence IS NULL OR (confidence >= 0 AND confidence <= 1)),
            rationale TEXT NOT NULL,        -- for an unscored result: why it could not judge
            evidence TEXT NOT NULL,         -- JSON: the signals and their values
            critic_version TEXT NOT NULL,
            backend TEXT NOT NULL,
            run_id TEXT REFERENCES runs(id),
            created_at TEXT NOT NULL,
            UNIQUE (generation_id, critic, critic_version, backend, run_id)
        );
        CREATE TABLE pairs (
            id TEXT PRIMARY KEY,            -- hash of (prompt, chosen, rejected, source)
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            chosen TEXT NOT NULL,
            rejected TEXT NOT NULL,
            chosen_generation_id TEXT REFERENCES generations(id),
            rejected_generation_id TEXT REFERENCES generations(id),
            source TEXT NOT NULL {_check("source", ("synthetic", "human", "revision"))},
            margin REAL,
            run_id TEXT REFERENCES runs(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX pairs_prompt ON pairs(prompt_id);
        CREATE TABLE reviews (
            id TEXT PRIMARY KEY,            -- hash of (reviewer, kind, prompt, generation, other)
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            generation_id TEXT REFERENCES generations(id),
            other_generation_id TEXT REFERENCES generations(id),  -- B of an A/B preference
            reviewer TEXT NOT NULL,
            kind TEXT NOT NULL {_check("kind", REVIEW_KINDS)},
            preference TEXT CHECK (preference IS NULL OR preference IN ('a', 'b', 'tie')),
            stars INTEGER CHECK (stars IS NULL OR (stars BETWEEN 1 AND 5)),
            thumbs TEXT CHECK (thumbs IS NULL OR thumbs IN ('up', 'down')),
            comment TEXT,
            rewrite TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,            -- kind + natural key of the work, so a rerun finds it
            kind TEXT NOT NULL,
            run_id TEXT REFERENCES runs(id),
            status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            payload TEXT NOT NULL,          -- JSON
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX jobs_status ON jobs(kind, status);
        """
    )
    db["prompts"].enable_fts(["text", "persona"], create_triggers=True)
    db["generations"].enable_fts(["text"], create_triggers=True)


@migrations()
def m002_decisions(db: Database) -> None:
    """What the feedback graph decided for each prompt in each run."""
    db.executescript(
        f"""
        CREATE TABLE decisions (
            id TEXT PRIMARY KEY,            -- run_id/prompt_id: one decision per prompt per run
            run_id TEXT NOT NULL REFERENCES runs(id),
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            config_hash TEXT NOT NULL,      -- the generation config the candidates came from
            outcome TEXT NOT NULL {_check("outcome", OUTCOMES)},
            status TEXT NOT NULL CHECK (status IN ('waiting', 'done')),
            reason TEXT NOT NULL,
            uncertainty REAL,
            margin REAL,
            chosen_generation_id TEXT REFERENCES generations(id),
            rejected_generation_id TEXT REFERENCES generations(id),
            pair_id TEXT REFERENCES pairs(id),
            rewards TEXT NOT NULL,          -- JSON: per candidate, the reward and its vector
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX decisions_prompt ON decisions(prompt_id, config_hash);
        CREATE INDEX decisions_waiting ON decisions(status, run_id);
        CREATE INDEX critiques_run ON critiques(run_id);
        CREATE INDEX pairs_run ON pairs(run_id);
        """
    )


@migrations()
def m003_review(db: Database) -> None:
    """The reviewer app: leases on escalated cases, reviews tied to the case they decide, and
    pairs from a person's rewrite (source ``human-revision``).

    SQLite cannot change a CHECK constraint in place, so ``pairs`` is rebuilt by SQLite's
    documented procedure (``Store.open`` runs migrations with foreign keys off and checks them
    before committing). Statement by statement: ``executescript`` would commit half-way.
    """
    sources = _check("source", ("synthetic", "human", "revision", "human-revision"))
    statements = [
        "ALTER TABLE reviews ADD COLUMN decision_id TEXT REFERENCES decisions(id)",
        "CREATE INDEX reviews_decision ON reviews(decision_id, reviewer)",
        """CREATE TABLE leases (
            decision_id TEXT NOT NULL REFERENCES decisions(id),
            holder TEXT NOT NULL,           -- one running reviewer app
            reviewer TEXT NOT NULL,
            expires_at TEXT NOT NULL,       -- an app that dies lets go when this passes
            created_at TEXT NOT NULL,
            PRIMARY KEY (decision_id, holder)
        )""",
        "CREATE INDEX leases_holder ON leases(holder)",
        f"""CREATE TABLE pairs_new (
            id TEXT PRIMARY KEY,
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            chosen TEXT NOT NULL,
            rejected TEXT NOT NULL,
            chosen_generation_id TEXT REFERENCES generations(id),
            rejected_generation_id TEXT REFERENCES generations(id),
            source TEXT NOT NULL {sources},
            margin REAL,
            run_id TEXT REFERENCES runs(id),
            created_at TEXT NOT NULL
        )""",
        """INSERT INTO pairs_new
            SELECT id, prompt_id, chosen, rejected, chosen_generation_id, rejected_generation_id,
                   source, margin, run_id, created_at
            FROM pairs""",
        "DROP TABLE pairs",
        "ALTER TABLE pairs_new RENAME TO pairs",
        "CREATE INDEX pairs_prompt ON pairs(prompt_id)",
        "CREATE INDEX pairs_run ON pairs(run_id)",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m004_training(db: Database) -> None:
    """Training jobs, what each adapter was trained on, and the promotion gate's reports."""
    statements = [
        """CREATE TABLE training_jobs (
            id TEXT PRIMARY KEY,
            method TEXT NOT NULL,           -- dpo, ppo, grpo, rloo
            status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
            launcher TEXT NOT NULL,         -- inprocess, subprocess, accelerate
            base_model TEXT NOT NULL,
            parent_version TEXT REFERENCES adapters(version),  -- in service when it started
            config TEXT NOT NULL,           -- JSON: the whole training config, no secrets
            data_hash TEXT NOT NULL,        -- what it trained on (pairs and weights, or prompts)
            examples INTEGER NOT NULL,
            output_dir TEXT NOT NULL,       -- checkpoints while it runs, then the adapter
            log_path TEXT NOT NULL,
            metrics TEXT NOT NULL,          -- JSON: per-step log and the final numbers
            adapter_version TEXT REFERENCES adapters(version),
            reason TEXT,                    -- why it failed
            pid INTEGER,
            run_id TEXT REFERENCES runs(id),  -- the nightly run that started it, if any
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT
        )""",
        "CREATE INDEX training_jobs_status ON training_jobs(status, method)",
        "ALTER TABLE adapters ADD COLUMN data_hash TEXT",
        "ALTER TABLE adapters ADD COLUMN config TEXT",
        "ALTER TABLE adapters ADD COLUMN job_id TEXT REFERENCES training_jobs(id)",
        "ALTER TABLE adapters ADD COLUMN replaced_version TEXT REFERENCES adapters(version)",
        "ALTER TABLE adapters ADD COLUMN reason TEXT",
        """CREATE TABLE gate_reports (
            id TEXT PRIMARY KEY,
            candidate_version TEXT NOT NULL REFERENCES adapters(version),
            baseline_version TEXT REFERENCES adapters(version),  -- NULL: the base model
            decision TEXT NOT NULL CHECK (decision IN ('promote', 'keep')),
            reason TEXT NOT NULL,
            report TEXT NOT NULL,           -- JSON: counts, win rate, interval, p-value, outcomes
            run_id TEXT REFERENCES runs(id),
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX gate_reports_candidate ON gate_reports(candidate_version)",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m005_traces(db: Database) -> None:
    """What each graph invocation did, node by node; every LLM judge call with its tokens,
    seconds and cost; and the outbox of people's decisions waiting to reach LangSmith."""
    statements = [
        """CREATE TABLE traces (
            id TEXT PRIMARY KEY,            -- one graph invocation; also its LangSmith root run id
            run_id TEXT NOT NULL REFERENCES runs(id),
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            kind TEXT NOT NULL,             -- start, continue, restart, resume, rewind, budget
            status TEXT NOT NULL CHECK (status IN ('running', 'done', 'waiting', 'failed')),
            langsmith_project TEXT,         -- NULL: not sent to LangSmith
            error TEXT,
            started_at TEXT NOT NULL,
            seconds REAL
        )""",
        "CREATE INDEX traces_thread ON traces(run_id, prompt_id, started_at)",
        """CREATE TABLE spans (
            id TEXT PRIMARY KEY,
            trace_id TEXT NOT NULL REFERENCES traces(id),
            node TEXT NOT NULL,
            started_at TEXT NOT NULL,
            seconds REAL NOT NULL,
            inputs TEXT NOT NULL,           -- JSON: what the node read (texts shortened)
            outputs TEXT,                   -- JSON: the state update it returned
            error TEXT                      -- or why it stopped (an interrupt waits for a person)
        )""",
        "CREATE INDEX spans_trace ON spans(trace_id, started_at)",
        """CREATE TABLE critic_calls (
            id TEXT PRIMARY KEY,
            trace_id TEXT REFERENCES traces(id),
            run_id TEXT REFERENCES runs(id),
            prompt_id TEXT,
            critic TEXT NOT NULL,
            backend TEXT NOT NULL,          -- local, crew
            model TEXT,                     -- the judge model of an LLM call
            generation_ids TEXT NOT NULL,   -- JSON list, in the order the judge saw them
            attempts INTEGER NOT NULL,      -- 1 + re-asks after malformed output
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            seconds REAL NOT NULL,
            cost_usd REAL,                  -- NULL: a local critic or a model without a price
            ok INTEGER NOT NULL,
            error TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX critic_calls_run ON critic_calls(run_id, critic)",
        "CREATE INDEX critic_calls_trace ON critic_calls(trace_id)",
        """CREATE TABLE feedback_outbox (
            id TEXT PRIMARY KEY,            -- the LangSmith feedback id
            review_id TEXT NOT NULL,        -- the review it reports (reviews may be withdrawn)
            trace_id TEXT NOT NULL REFERENCES traces(id),
            op TEXT NOT NULL CHECK (op IN ('create', 'delete')),
            key TEXT NOT NULL,
            body TEXT NOT NULL,             -- JSON: score, value, comment, correction, source_info
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        )""",
        "CREATE INDEX feedback_outbox_status ON feedback_outbox(status, created_at)",
        "CREATE INDEX feedback_outbox_review ON feedback_outbox(review_id)",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m006_calibration(db: Database) -> None:
    """Labelled pairs imported from public or team data (reviews with source ``import``), the
    learned reward models fitted on people's decisions, and which model each decision used."""
    statements = [
        "ALTER TABLE reviews ADD COLUMN source TEXT NOT NULL DEFAULT 'reviewer' "
        "CHECK (source IN ('reviewer', 'import'))",
        "ALTER TABLE reviews ADD COLUMN dataset TEXT",  # the imported file's dataset name
        "CREATE INDEX reviews_source ON reviews(source, dataset)",
        """CREATE TABLE reward_models (
            version TEXT PRIMARY KEY,       -- rm-<n>: fitted in order
            status TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'retired')),
            model TEXT NOT NULL,            -- JSON: features, weights, calibrator
            policy TEXT NOT NULL,           -- JSON: target, risk, threshold, coverage
            report TEXT NOT NULL,           -- JSON: cross-validated metrics, reliability, curve
            data_hash TEXT NOT NULL,        -- the labelled pairs it was fitted on
            labels INTEGER NOT NULL,
            critic_versions TEXT NOT NULL,  -- JSON: critic -> backend:version of its features
            diagram_path TEXT,
            created_at TEXT NOT NULL
        )""",
        "ALTER TABLE decisions ADD COLUMN reward_model TEXT REFERENCES reward_models(version)",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m007_run_owner(db: Database) -> None:
    """When the process running a run or a training job started, so a pid the system reused
    after that process died is not taken for it (the work would otherwise look alive forever)."""
    db.execute("ALTER TABLE runs ADD COLUMN pid_started REAL")
    db.execute("ALTER TABLE training_jobs ADD COLUMN pid_started REAL")


@migrations()
def m008_prompt_failures(db: Database) -> None:
    """Prompts a run could not get through: one that made generation or judging fail (or crashed
    the process twice) is quarantined, so later runs go on without it until it is edited or
    named explicitly; ``attempt`` marks a prompt being generated alone after a crash."""
    db.execute(
        """CREATE TABLE prompt_failures (
            prompt_id TEXT PRIMARY KEY REFERENCES prompts(id),
            content_hash TEXT NOT NULL,     -- the prompt as it failed: an edited one is tried again
            stage TEXT NOT NULL CHECK (stage IN ('generate', 'judge', 'size')),
            status TEXT NOT NULL CHECK (status IN ('attempt', 'failed')),
            reason TEXT NOT NULL,
            run_id TEXT REFERENCES runs(id),
            attempts INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )


@migrations()
def m009_trained_reward_models(db: Database) -> None:
    """Reward models trained on people's decisions (``criticloop train --method reward``): the
    registry a ``reward_model`` critic loads from. One is active per dimension ('' is the
    overall preference); activating another retires it."""
    db.execute(
        """CREATE TABLE trained_reward_models (
            version TEXT PRIMARY KEY,       -- reward-<job stamp>
            status TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'retired')),
            dimension TEXT NOT NULL,        -- '' for people's overall preference
            base_model TEXT NOT NULL,       -- what it was trained from (recorded name)
            base_path TEXT NOT NULL,        -- what from_pretrained loads
            tuning TEXT NOT NULL CHECK (tuning IN ('lora', 'full')),
            path TEXT NOT NULL,             -- the adapter (lora) or the whole model (full)
            center REAL NOT NULL,           -- mean reward over its training responses
            metrics TEXT NOT NULL,          -- JSON: held-out accuracy, ECE, reliability, loss
            config TEXT NOT NULL,           -- JSON: the training config
            data_hash TEXT NOT NULL,
            pairs INTEGER NOT NULL,
            job_id TEXT REFERENCES training_jobs(id),
            diagram_path TEXT,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX trained_reward_models_status ON trained_reward_models(status)")


@migrations()
def m010_label_dimensions(db: Database) -> None:
    """What a label judges: a critic's name (``helpfulness``) for labels given on one dimension,
    '' for people's overall preference (every label before this)."""
    db.execute("ALTER TABLE reviews ADD COLUMN dimension TEXT NOT NULL DEFAULT ''")


@migrations()
def m011_feedback_logs(db: Database) -> None:
    """Production feedback logs (``criticloop feedback import``): reviews with source ``log``,
    the raw category label a user gave (``UR2``; mapped to a thumb at import) and when the user
    gave the rating (``logged_at``, from the log); and pairs with source ``log-revision`` (an
    answer users rated down against its revision).

    Both CHECKs change, so ``reviews`` and ``pairs`` are rebuilt by SQLite's procedure, as in
    ``m003_review``, keeping every row, id and index; statement by statement.
    """
    sources = _check("source", ("reviewer", "import", "log"))
    kinds = _check("kind", ("preference", "stars", "thumbs", "comment", "rewrite"))
    pair_sources = _check(
        "source", ("synthetic", "human", "revision", "human-revision", "log-revision")
    )
    statements = [
        f"""CREATE TABLE reviews_new (
            id TEXT PRIMARY KEY,            -- hash of (reviewer, kind, prompt, generation, other)
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            generation_id TEXT REFERENCES generations(id),
            other_generation_id TEXT REFERENCES generations(id),  -- B of an A/B preference
            reviewer TEXT NOT NULL,
            kind TEXT NOT NULL {kinds},
            preference TEXT CHECK (preference IS NULL OR preference IN ('a', 'b', 'tie')),
            stars INTEGER CHECK (stars IS NULL OR (stars BETWEEN 1 AND 5)),
            thumbs TEXT CHECK (thumbs IS NULL OR thumbs IN ('up', 'down')),
            comment TEXT,
            rewrite TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            decision_id TEXT REFERENCES decisions(id),
            source TEXT NOT NULL DEFAULT 'reviewer' {sources},
            dataset TEXT,                   -- the imported file's dataset name
            dimension TEXT NOT NULL DEFAULT '',
            label TEXT,                     -- a log's raw category label (UR2), mapped to thumbs
            logged_at TEXT                  -- when the user gave a logged rating (from the log)
        )""",
        """INSERT INTO reviews_new (id, prompt_id, generation_id, other_generation_id, reviewer,
                kind, preference, stars, thumbs, comment, rewrite, created_at, updated_at,
                decision_id, source, dataset, dimension)
            SELECT id, prompt_id, generation_id, other_generation_id, reviewer, kind, preference,
                   stars, thumbs, comment, rewrite, created_at, updated_at, decision_id, source,
                   dataset, dimension
            FROM reviews""",
        "DROP TABLE reviews",
        "ALTER TABLE reviews_new RENAME TO reviews",
        "CREATE INDEX reviews_decision ON reviews(decision_id, reviewer)",
        "CREATE INDEX reviews_source ON reviews(source, dataset)",
        "CREATE INDEX reviews_generation ON reviews(generation_id, kind)",
        f"""CREATE TABLE pairs_new (
            id TEXT PRIMARY KEY,
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            chosen TEXT NOT NULL,
            rejected TEXT NOT NULL,
            chosen_generation_id TEXT REFERENCES generations(id),
            rejected_generation_id TEXT REFERENCES generations(id),
            source TEXT NOT NULL {pair_sources},
            margin REAL,
            run_id TEXT REFERENCES runs(id),
            created_at TEXT NOT NULL
        )""",
        """INSERT INTO pairs_new
            SELECT id, prompt_id, chosen, rejected, chosen_generation_id, rejected_generation_id,
                   source, margin, run_id, created_at
            FROM pairs""",
        "DROP TABLE pairs",
        "ALTER TABLE pairs_new RENAME TO pairs",
        "CREATE INDEX pairs_prompt ON pairs(prompt_id)",
        "CREATE INDEX pairs_run ON pairs(run_id)",
    ]
    for statement in statements:
        db.execute(statement)


@migrations()
def m012_job_costs(db: Database) -> None:
    """What each training job cost: wall time (summed over its attempts when it resumed), the
    tokens the trainer saw, the devices it ran on, device-hours (wall seconds x devices / 3600)
    and, with ``CRITICLOOP_TRAINING__DEVICE_HOUR_PRICE`` set, the cost."""
    for statement in (
        "ALTER TABLE training_jobs ADD COLUMN wall_seconds REAL",
        "ALTER TABLE training_jobs ADD COLUMN tokens INTEGER",
        "ALTER TABLE training_jobs ADD COLUMN devices INTEGER",
        "ALTER TABLE training_jobs ADD COLUMN device_hours REAL",
        "ALTER TABLE training_jobs ADD COLUMN device_hour_price REAL",
        "ALTER TABLE training_jobs ADD COLUMN cost REAL",
    ):
        db.execute(statement)


@migrations()
def m013_log_revisions(db: Database) -> None:
    """The revise step of production feedback logs (``criticloop feedback revise``): one row per
    answer users rated down and the way it was rewritten (``mode``: from the user's comment, or
    a fresh answer), with the rewrite, what the critics made of it (``outcome`` ``pair``: a
    ``log-revision`` pair; ``dropped``: no pair, ``reason`` says why; ``unjudged``: no critic
    could score it, tried again next time) and the run that did it."""
    db.execute(
        """CREATE TABLE log_revisions (
            id TEXT PRIMARY KEY,            -- rated answer's generation id + '/' + mode
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            rated_generation_id TEXT NOT NULL REFERENCES generations(id),
            mode TEXT NOT NULL CHECK (mode IN ('feedback', 'alternative')),
            rewrite_generation_id TEXT REFERENCES generations(id),
            outcome TEXT NOT NULL CHECK (outcome IN ('pair', 'dropped', 'unjudged')),
            reason TEXT NOT NULL,
            margin REAL,
            rewards TEXT NOT NULL,          -- JSON: the rated answer's and the rewrite's reward
            pair_id TEXT REFERENCES pairs(id),
            run_id TEXT REFERENCES runs(id),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX log_revisions_outcome ON log_revisions(outcome, mode)")
