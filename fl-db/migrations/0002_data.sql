-- The data-contribution index: registered batches of signed records (proposals, annotations),
-- annotation assignments, commit-reveal, consensus labels and annotator quality. Portable SQL,
-- as 0001. Record content addresses are the SHA-256 digests of their CIDv1 (raw codec) as
-- lowercase 0x hex (the digests the registry's Merkle root is built from); labels are class
-- indices (small integers).

-- Batches the DataRegistry contract registered, as its BatchRegistered events give them.
CREATE TABLE data_batches (
    root        TEXT PRIMARY KEY,
    batch_index BIGINT NOT NULL UNIQUE,
    contributor TEXT NOT NULL,
    records     BIGINT NOT NULL,
    location    TEXT NOT NULL,
    -- Where the registration was included, when known (NULL otherwise).
    block       BIGINT,
    tx          TEXT
);

-- Records of registered batches; annotation columns are NULL for proposals.
CREATE TABLE data_records (
    cid         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('proposal', 'annotation')),
    contributor TEXT NOT NULL,
    batch_root  TEXT NOT NULL REFERENCES data_batches (root),
    bytes_len   BIGINT NOT NULL,
    item        TEXT,
    epoch       BIGINT,
    outcome     BIGINT,
    category    BIGINT,
    quality     BIGINT,
    risk        BIGINT
);
CREATE INDEX data_records_batch ON data_records (batch_root);
CREATE INDEX data_records_item ON data_records (epoch, item);

-- Which annotator labels which item in an epoch.
CREATE TABLE data_assignments (
    epoch     BIGINT NOT NULL,
    item      TEXT NOT NULL,
    annotator TEXT NOT NULL,
    PRIMARY KEY (epoch, item, annotator)
);
CREATE INDEX data_assignments_annotator ON data_assignments (epoch, annotator);

-- Commitments to annotations, and the annotation record each was revealed with (NULL until then).
CREATE TABLE data_commitments (
    epoch        BIGINT NOT NULL,
    item         TEXT NOT NULL,
    annotator    TEXT NOT NULL,
    commitment   TEXT NOT NULL,
    revealed_cid TEXT,
    PRIMARY KEY (epoch, item, annotator)
);

-- Consensus label (NULL: nobody answered) and its posterior probability, per epoch, field, item.
CREATE TABLE data_consensus (
    epoch      BIGINT NOT NULL,
    field      TEXT NOT NULL CHECK (field IN ('outcome', 'category', 'quality', 'risk')),
    item       TEXT NOT NULL,
    label      BIGINT,
    confidence DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (epoch, field, item)
);

-- Each annotator's quality score in an epoch, over how many items.
CREATE TABLE data_annotator_quality (
    epoch     BIGINT NOT NULL,
    annotator TEXT NOT NULL,
    score     DOUBLE PRECISION NOT NULL,
    items     BIGINT NOT NULL,
    PRIMARY KEY (epoch, annotator)
);
