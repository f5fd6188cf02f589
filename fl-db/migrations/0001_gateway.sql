-- The inference gateway's tables. Portable SQL: SQLite and PostgreSQL run this file as is.
-- Addresses, hashes and signatures are lowercase 0x hex TEXT; uint256 values (nonces, fees in
-- wei) are decimal TEXT; times are unix seconds.

-- Every request the gateway answered, with the nodes it asked and what the consensus made of them.
CREATE TABLE gateway_requests (
    request_hash TEXT PRIMARY KEY,
    requester    TEXT NOT NULL,
    model_cid    TEXT NOT NULL,
    label        TEXT NOT NULL,
    -- JSON arrays of node addresses.
    selected     TEXT NOT NULL,
    agreeing     TEXT NOT NULL,
    disagreeing  TEXT NOT NULL,
    latency_ms   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX gateway_requests_created_at ON gateway_requests (created_at);

-- Fee receipts a requester signed; pending until a settlement transaction includes them.
CREATE TABLE gateway_receipts (
    requester     TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    gateway       TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    fee           TEXT NOT NULL,
    deadline      BIGINT NOT NULL,
    signature     TEXT NOT NULL,
    accepted_at   BIGINT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'settled', 'rejected')),
    settled_tx    TEXT,
    reject_reason TEXT,
    PRIMARY KEY (requester, nonce)
);
CREATE INDEX gateway_receipts_status ON gateway_receipts (status, accepted_at);

-- A node's score as the gateway (validator '') or a validator saw it at a time.
CREATE TABLE gateway_node_scores (
    node               TEXT NOT NULL,
    at                 BIGINT NOT NULL,
    validator          TEXT NOT NULL,
    served             BIGINT NOT NULL,
    agreed             BIGINT NOT NULL,
    disagreed          BIGINT NOT NULL,
    missed             BIGINT NOT NULL,
    challenges         BIGINT NOT NULL,
    challenges_correct BIGINT NOT NULL,
    latency_p50_ms     BIGINT NOT NULL,
    latency_p95_ms     BIGINT NOT NULL,
    reputation         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node, validator, at)
);
CREATE INDEX gateway_node_scores_node_at ON gateway_node_scores (node, at);
