-- The agentkeel conversation store in PostgreSQL: content by reference, and who owns it.
--
-- agentkeel/store/postgres.py applies this file on first use (under an advisory lock, so
-- workers starting together do not race), and temporal-dev.yml applies it when the stack
-- starts. Every statement is idempotent: applying it again changes nothing.

-- One row per content: `ref` is `sha256:<hex>` of the plaintext; `data` is the plaintext
-- (`encoding` 'plain') or a sealed payload ('sealed', KEEL_ENCRYPTION_KEY); `size` is the
-- plaintext's length; `created_at` (Unix seconds) is the first write, for gc's grace period.
CREATE TABLE IF NOT EXISTS content (
    ref TEXT PRIMARY KEY,
    encoding TEXT NOT NULL,
    data BYTEA NOT NULL,
    size BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

-- One row per (workflow id, content) written by that run's activities: gc keeps content
-- while one of its owners is still listed by the Temporal namespace.
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT NOT NULL,
    ref TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (owner, ref)
);

-- gc asks, for each content, whether any owner row is left.
CREATE INDEX IF NOT EXISTS owners_by_ref ON owners (ref);
