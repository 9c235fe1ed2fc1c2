"""Tables of the scoring database (their history is in ``migrations/versions``).

Tables
------
``decisions``         one row per automated decision: hashed subject, fingerprint, model, score,
                      outcome
``audit_log``         hash-chained audit records, ``seq`` is contiguous from 1
``audit_head``        one row: ``seq`` and ``hash`` of the last audit record (lets ``verify`` see a
                      deleted tail, and is the row writers lock to append)
``review_items``      manual-review queue: manual-review outcomes, fraud flags, applicant requests
``fraud_links``       one row per screened application: its keyed-hash identifiers (device, ip,
                      phone, card, id number); the relationship graph and the velocity history
                      are rebuilt from these rows at start-up
``fraud_list_entries`` values of the rule set's external lists (blacklists)
``model_assignments`` champion / challenger / share / champion history per lifecycle stage
``model_events``      every registration, promotion and rollback
``registered_models`` stage and artifact digest of every model registered
``batch_jobs``        one row per batch-scoring upload (no per-row persistence)
``api_keys``          API keys: public key id, name, role, argon2 hash of the key, revocation
``loans``             one row per booked loan: the deciding application, origination month,
                      principal, the segment tags the decision lacks (industry, purpose and
                      its free text, customer type, region) and its performance to date
``outcomes``          a loan's monthly performance: month on book, calendar month, days past due,
                      balance, paid, interest and fees, charge-off, recoveries
``monitoring_alerts`` drift, performance and portfolio alerts raised by the monitoring checks
``browser_sessions``  dashboard sign-ins: SHA-256 of the session cookie's token, the key id it acts
                      as, its CSRF token, creation and expiry
``purpose_labels``    loan purpose read from a decision's free-text description: predicted
                      purpose and confidence, and the label a reviewer gave (``status`` auto,
                      queued, corrected or confirmed)
``decision_feature_bins`` one row per decision and reference feature: the bin of the release's
                      per-feature reference the applicant's value fell in (for CSI); the raw
                      value itself is not stored
``feature_bin_counts`` rollup of ``decision_feature_bins``: decisions per decision month
                      (``YYYY-MM``), stage, role, feature and bin, kept in the writer's
                      transaction (v0009), so the CSI trend reads a few thousand rows instead
                      of every decision's bins

A change here needs a migration in ``migrations/versions`` too: databases are built by the
migrations, and ``tests/integration/scoring/test_scoring_migrations.py`` fails while the two
disagree.
"""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

HASH_LEN = 64

decisions = Table(
    "decisions",
    metadata,
    Column("decision_id", String(32), primary_key=True),
    Column("created_at", String(40), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("subject_hash", String(HASH_LEN), nullable=False),
    Column("fingerprint", String(HASH_LEN), nullable=False),
    Column("model_id", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("score", Float, nullable=True),
    Column("probability", Float, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("rules_hit", JSON, nullable=False),
    Column("details", JSON, nullable=False),
    Column("audit_seq", Integer, nullable=False),
    # no index on subject_hash: a random key touches a random index page on every commit; add
    # one if decisions must be looked up by subject
    Index("ix_decisions_created", "created_at"),
    # covering for the matured-loan views (v0006): an index-only scan, not the wide rows
    Index("ix_decisions_scores", "decision_id", "role", "score", "probability"),
    # covering for a month's champion applications (v0008: the CSI of the latest month)
    Index("ix_decisions_month_role", "created_at", "stage", "role", "decision_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("created_at", String(40), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(HASH_LEN), nullable=False),
    Column("hash", String(HASH_LEN), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(HASH_LEN), nullable=False),
)

review_items = Table(
    "review_items",
    metadata,
    Column("item_id", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", String(32), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("reviewer", String(200), nullable=True),
    Column("claimed_at", String(40), nullable=True),
    Column("resolved_at", String(40), nullable=True),
    Column("resolution", String(32), nullable=True),
    Column("note", Text, nullable=True),
    UniqueConstraint("decision_id", "kind", name="uq_review_decision_kind"),
    Index("ix_review_status", "status"),
)

fraud_links = Table(
    "fraud_links",
    metadata,
    Column("link_id", Integer, primary_key=True, autoincrement=True),
    Column("application_key", String(HASH_LEN), nullable=False),
    Column("decision_id", String(32), nullable=False),
    Column("identifiers", JSON, nullable=False),
    Column("created_at", String(40), nullable=False),
)

fraud_list_entries = Table(
    "fraud_list_entries",
    metadata,
    Column("list_name", String(64), primary_key=True),
    Column("value", String(200), primary_key=True),
    Column("added_at", String(40), nullable=False),
)

model_assignments = Table(
    "model_assignments",
    metadata,
    Column("stage", String(16), primary_key=True),
    Column("champion_id", String(200), nullable=True),
    Column("challenger_id", String(200), nullable=True),
    Column("challenger_share", Float, nullable=False),
    Column("history", JSON, nullable=False),
    Column("updated_at", String(40), nullable=False),
    Column("version", Integer, nullable=False),
)

model_events = Table(
    "model_events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", String(40), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("model_id", String(200), nullable=True),
    Column("previous_model_id", String(200), nullable=True),
    Column("actor", String(200), nullable=False),
    Column("note", Text, nullable=False),
    Column("audit_seq", Integer, nullable=False),
)

registered_models = Table(
    "registered_models",
    metadata,
    Column("model_id", String(200), primary_key=True),
    Column("stage", String(16), nullable=False),
    Column("artifact_sha256", String(HASH_LEN), nullable=False),
    Column("registered_at", String(40), nullable=False),
)

batch_jobs = Table(
    "batch_jobs",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("created_at", String(40), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("model_id", String(200), nullable=False),
    Column("input_sha256", String(HASH_LEN), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("audit_seq", Integer, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("key_hash", String(200), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("revoked_at", String(40), nullable=True),
)

SEGMENT_LEN = 64

loans = Table(
    "loans",
    metadata,
    Column("decision_id", String(32), primary_key=True),
    Column("account_id", String(128), nullable=True),
    Column("originated", String(7), nullable=False),
    Column("principal", Float, nullable=False),
    Column("industry", String(SEGMENT_LEN), nullable=False),
    Column("purpose", String(SEGMENT_LEN), nullable=False),
    Column("purpose_text", Text, nullable=False),
    Column("customer_type", String(SEGMENT_LEN), nullable=False),
    Column("region", String(SEGMENT_LEN), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("audit_seq", Integer, nullable=False),
    # per-loan performance to date, kept by the import from the loan's outcome rows (and
    # checked against them by the audit verification): monitoring reads one row per loan
    Column("months_on_book", Integer, nullable=False),
    Column("first_bad_mob", Integer, nullable=True),
    Column("income", Float, nullable=False),
    Column("charged_off", Float, nullable=False),
    Column("recovered", Float, nullable=False),
    Index("ix_loans_originated", "originated"),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("decision_id", String(32), primary_key=True),
    Column("month_on_book", Integer, primary_key=True, autoincrement=False),
    Column("month", String(7), nullable=False),
    Column("dpd", Integer, nullable=False),
    Column("balance", Float, nullable=False),
    Column("paid", Float, nullable=False),
    Column("interest_fees", Float, nullable=False),
    Column("charge_off", Float, nullable=False),
    Column("recoveries", Float, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("audit_seq", Integer, nullable=False),
    # covering for the month-filtered views (v0006): a month's rows are spread over every page
    Index(
        "ix_outcomes_month_state",
        "month",
        "decision_id",
        "month_on_book",
        "dpd",
        "balance",
        "charge_off",
    ),
    Index("ix_outcomes_audit_seq", "audit_seq"),
)

monitoring_alerts = Table(
    "monitoring_alerts",
    metadata,
    Column("alert_id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", String(40), nullable=False),
    Column("as_of", String(7), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("retrain_recommended", Boolean, nullable=False),
    Column("message", Text, nullable=False),
    Column("evidence", JSON, nullable=False),
    UniqueConstraint("kind", "subject", "as_of", name="uq_alert_kind_subject_month"),
)

browser_sessions = Table(
    "browser_sessions",
    metadata,
    Column("token_sha256", String(HASH_LEN), primary_key=True),
    Column("key_id", String(16), nullable=False),
    Column("csrf_token", String(HASH_LEN), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
    Index("ix_browser_sessions_key", "key_id"),
)

purpose_labels = Table(
    "purpose_labels",
    metadata,
    Column("label_id", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", String(32), nullable=False),
    Column("text", Text, nullable=False),
    Column("predicted", String(32), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("label", String(32), nullable=True),
    Column("status", String(16), nullable=False),
    Column("review_item_id", Integer, nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("reviewed_by", String(200), nullable=True),
    Column("reviewed_at", String(40), nullable=True),
    UniqueConstraint("decision_id", name="uq_purpose_decision"),
)

decision_feature_bins = Table(
    "decision_feature_bins",
    metadata,
    Column("decision_id", String(32), primary_key=True),
    Column("feature", String(200), primary_key=True),
    Column("bin", Integer, nullable=False),
    # covering (v0008): the CSI views read the bins from the index alone
    Index("ix_feature_bins_covering", "decision_id", "feature", "bin"),
)

feature_bin_counts = Table(
    "feature_bin_counts",
    metadata,
    Column("month", CHAR(7), primary_key=True),
    Column("stage", String(16), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("feature", String(200), primary_key=True),
    Column("bin", Integer, primary_key=True, autoincrement=False),
    Column("n", Integer, nullable=False),
)
